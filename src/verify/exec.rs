//! Runs a credential helper or provider plugin: the program itself (never a shell), input on
//! stdin, output read up to a bound, the whole run bounded in time; stderr is discarded (a
//! helper may print a secret there). A run that hangs, crashes or floods costs its caller this
//! one answer, an error that names the program and never its output.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Time a helper or plugin gets for one answer.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from a helper or plugin.
pub const MAX_EXEC_OUTPUT: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("could not be started: {0}")]
    Spawn(String),
    #[error("did not answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("printed more than {0} bytes")]
    TooLarge(usize),
    #[error("exited with {0}")]
    Failed(String),
}

pub struct Bounds {
    pub timeout: Duration,
    pub max_output: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            timeout: EXEC_TIMEOUT,
            max_output: MAX_EXEC_OUTPUT,
        }
    }
}

/// Runs `program args…` with `input` on stdin and extra `env`; its stdout on exit 0.
pub async fn run(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    input: &[u8],
    bounds: &Bounds,
) -> Result<Vec<u8>, ExecError> {
    let (status, out) = run_any(program, args, env, input, bounds).await?;
    match status {
        Ok(()) => Ok(out),
        Err(status) => Err(ExecError::Failed(status)),
    }
}

/// As [`run`], with the stdout of a non-zero exit too (bounded the same way), and the exit
/// status as text when it was not a success.
pub async fn run_any(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    input: &[u8],
    bounds: &Bounds,
) -> Result<(Result<(), String>, Vec<u8>), ExecError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ExecError::Spawn(e.kind().to_string()))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let max = bounds.max_output;
    let work = async {
        let write = async {
            if let Some(mut stdin) = stdin {
                // A program that never reads its input is not an error by itself.
                let _ = stdin.write_all(input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let read = async {
            let mut out = Vec::new();
            if let Some(stdout) = stdout {
                let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
                stdout
                    .take(limit)
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| ExecError::Failed(e.kind().to_string()))?;
            }
            if out.len() > max {
                return Err(ExecError::TooLarge(max));
            }
            Ok(out)
        };
        let ((), out) = tokio::join!(write, read);
        let out = out?;
        let status = child
            .wait()
            .await
            .map_err(|e| ExecError::Failed(e.kind().to_string()))?;
        if status.success() {
            Ok((Ok(()), out))
        } else {
            Ok((Err(status.to_string()), out))
        }
    };
    let result = match tokio::time::timeout(bounds.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ExecError::Timeout(bounds.timeout)),
    };
    if result.is_err() {
        // A flood or a hang: stop it now (kill_on_drop would too, later).
        let _ = child.start_kill();
    }
    result
}
