//! `imageposture scan`: the ImagePosture objects the operator would write, from a pod list.

use crate::cli::ScanArgs;

pub async fn run(_args: ScanArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("scan is not implemented yet".into())
}
