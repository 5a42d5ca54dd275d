//! Docker's reference grammar, by hand: `[domain[:port]/]path[:tag][@digest]`.
//!
//! Why not oci-spec's `Reference`: its anchored regex takes ~60 ms (250M instructions) to compile
//! at first use, most of a one-image `observe`. This parser is linear in the input (which the
//! caller bounds), allocates one string and cannot panic. It accepts what distribution's
//! `reference` package accepts, with two deliberate narrowings: a tag is ASCII (`\w` is ASCII in
//! Go; oci-spec's Rust regex let Unicode letters through), and a host must be a valid domain
//! (distribution lets `a_b.c/x` through as a path and then calls `a_b.c` the host).

/// Longest repository path, as in distribution (`NameTotalLengthMax`).
const MAX_REPOSITORY: usize = 255;
/// Longest tag: one word character and up to 127 more.
const MAX_TAG: usize = 128;

const DOCKER_HUB: &str = "docker.io";
const OFFICIAL_NAMESPACE: &str = "library";

/// The parts of a reference, Docker Hub defaults applied (`nginx` -> `docker.io`,
/// `library/nginx`). The host is as written (case is the caller's business); the digest is
/// not validated beyond its shape `algorithm:encoded` (the caller decides which it accepts).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parts<'a> {
    pub domain: &'a str,
    pub repository: String,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum ParseError {
    #[error("invalid reference format")]
    Format,
    #[error("repository must be lowercase [a-z0-9] separated by '.', '_', '__' or '-'")]
    Path,
    #[error("invalid registry host")]
    Domain,
    #[error("invalid tag format")]
    Tag,
    #[error("invalid digest format")]
    Digest,
    #[error("repository name must not be more than {MAX_REPOSITORY} characters")]
    TooLong,
}

pub(super) fn split(input: &str) -> Result<Parts<'_>, ParseError> {
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (input, None),
    };
    if let Some(d) = digest {
        if !is_digest(d) {
            return Err(ParseError::Digest);
        }
    }
    // A ':' after the last '/' starts the tag; before it, it is the registry's port.
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return Err(ParseError::Tag);
        }
    }
    if name.is_empty() {
        return Err(ParseError::Format);
    }
    let (domain, path) = split_domain(name)?;
    if !path.split('/').all(is_path_component) {
        return Err(ParseError::Path);
    }
    // Every spelling of Docker Hub is one registry, so `library/` applies to all of them
    // (found by fuzzing: `registry-1.docker.io/o` and `docker.io/o` named two images).
    let domain = if super::normalize_registry(domain) == DOCKER_HUB {
        DOCKER_HUB
    } else {
        domain
    };
    let repository = if domain == DOCKER_HUB && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > MAX_REPOSITORY {
        return Err(ParseError::TooLong);
    }
    Ok(Parts {
        domain,
        repository,
        tag,
        digest,
    })
}

/// The first component is a host when it looks like one (a '.', a port, or `localhost`) and a
/// path follows; otherwise the whole name is a Docker Hub path.
fn split_domain(name: &str) -> Result<(&str, &str), ParseError> {
    match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if is_domain(first) {
                Ok((first, path))
            } else {
                Err(ParseError::Domain)
            }
        }
        _ => Ok((DOCKER_HUB, name)),
    }
}

/// `[a-z0-9]+` runs joined by exactly one of `.`, `_`, `__` or a run of `-`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !(b.first().is_some_and(alnum) && b.last().is_some_and(alnum)) {
        return false;
    }
    // The separator run since the last alphanumeric: its length and how many were '-' / '_'.
    let (mut len, mut dashes, mut underscores) = (0usize, 0usize, 0usize);
    for x in b {
        if alnum(x) {
            let ok = len == 0 || len == dashes || (len == underscores && len <= 2) || len == 1;
            if !ok {
                return false;
            }
            (len, dashes, underscores) = (0, 0, 0);
        } else {
            match x {
                b'-' => dashes += 1,
                b'_' => underscores += 1,
                b'.' => {}
                _ => return false,
            }
            len += 1;
        }
    }
    true
}

/// `label(.label)*(:port)?`, a label being alphanumerics with inner hyphens.
fn is_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    })
}

/// `[\w][\w.-]{0,127}`, ASCII word characters.
fn is_tag(t: &str) -> bool {
    let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
    let b = t.as_bytes();
    b.len() <= MAX_TAG
        && b.first().is_some_and(word)
        && b.iter().all(|x| word(x) || *x == b'.' || *x == b'-')
}

/// `algorithm:encoded`, the algorithm `[A-Za-z][A-Za-z0-9]*` parts joined by `-_+.`, the
/// encoded part at least 32 hex digits.
fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ok(s: &str) -> (String, String, Option<String>, Option<String>) {
        let p = split(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        (
            p.domain.to_string(),
            p.repository,
            p.tag.map(str::to_string),
            p.digest.map(str::to_string),
        )
    }

    fn o(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn docker_hub_defaults() {
        for (input, repo) in [
            ("busybox", "library/busybox"),
            ("library/busybox", "library/busybox"),
            ("docker.io/busybox", "library/busybox"),
            ("index.docker.io/busybox", "library/busybox"),
            ("index.docker.io/user/app", "user/app"),
            ("user/app", "user/app"),
            ("localhost", "library/localhost"),
            ("a/b/c/d", "a/b/c/d"),
        ] {
            let (domain, r, tag, digest) = ok(input);
            assert_eq!(
                (domain.as_str(), r.as_str()),
                ("docker.io", repo),
                "{input}"
            );
            assert_eq!((tag, digest), (None, None), "{input}");
        }
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let d = format!("sha256:{HEX}");
        assert_eq!(
            ok("test.com:tag"),
            (
                "docker.io".into(),
                "library/test.com".into(),
                o("tag"),
                None
            )
        );
        assert_eq!(
            ok("test.com:5000"),
            (
                "docker.io".into(),
                "library/test.com".into(),
                o("5000"),
                None
            )
        );
        assert_eq!(
            ok("test.com/repo:tag"),
            ("test.com".into(), "repo".into(), o("tag"), None)
        );
        assert_eq!(
            ok("test:5000/repo"),
            ("test:5000".into(), "repo".into(), None, None)
        );
        assert_eq!(
            ok(&format!("localhost:5000/a/b:v1.2_x-y@{d}")),
            ("localhost:5000".into(), "a/b".into(), o("v1.2_x-y"), o(&d))
        );
        assert_eq!(
            ok("localhost/x"),
            ("localhost".into(), "x".into(), None, None)
        );
        assert_eq!(
            ok(&format!("Sub-1.Example.COM:443/x@{d}")),
            ("Sub-1.Example.COM:443".into(), "x".into(), None, o(&d))
        );
        assert_eq!(
            ok(&format!("127.0.0.1:5000/a@{d}")),
            ("127.0.0.1:5000".into(), "a".into(), None, o(&d))
        );
        // Separators inside a path component.
        for p in ["a.b", "a_b", "a__b", "a-b", "a---b", "a-b.c_d__e", "0"] {
            assert_eq!(ok(&format!("h.io/{p}")).1, p, "{p}");
        }
        let max_tag = format!("h.io/x:{}", "t".repeat(128));
        assert!(split(&max_tag).is_ok());
    }

    #[test]
    fn rejects() {
        let d = format!("sha256:{HEX}");
        for (input, why) in [
            ("", ParseError::Format),
            (":tag", ParseError::Format),
            ("@sha256:00", ParseError::Digest),
            ("a@", ParseError::Digest),
            ("a@sha256", ParseError::Digest),
            ("a@sha256:0123", ParseError::Digest),
            (
                "a@sha256:zz0123456789abcdef0123456789abcdef",
                ParseError::Digest,
            ),
            (
                "a@1sha:0123456789abcdef0123456789abcdef",
                ParseError::Digest,
            ),
            (
                "a@b@sha256:0123456789abcdef0123456789abcdef",
                ParseError::Digest,
            ),
            ("a:", ParseError::Tag),
            ("a:-x", ParseError::Tag),
            ("a:.x", ParseError::Tag),
            ("a:t\u{e9}", ParseError::Tag),
            ("a:b:c", ParseError::Path),
            ("Upper", ParseError::Path),
            ("UPPER/case", ParseError::Path),
            ("h.io/Upper", ParseError::Path),
            ("a//b", ParseError::Path),
            ("a/", ParseError::Path),
            ("/a", ParseError::Path),
            ("h.io/", ParseError::Path),
            ("h.io/a..b", ParseError::Path),
            ("h.io/a___b", ParseError::Path),
            ("h.io/a._b", ParseError::Path),
            ("h.io/-a", ParseError::Path),
            ("h.io/a-", ParseError::Path),
            ("h.io/a b", ParseError::Path),
            ("h.io/a\u{e9}", ParseError::Path),
            ("a b", ParseError::Path),
            ("a:b/c", ParseError::Domain),
            ("h.io:/x", ParseError::Domain),
            ("h.io:50a/x", ParseError::Domain),
            ("-h.io/x", ParseError::Domain),
            ("h-.io/x", ParseError::Domain),
            ("h..io/x", ParseError::Domain),
            (".h.io/x", ParseError::Domain),
            ("a_b.c/x", ParseError::Domain),
            ("[::1]:5000/x", ParseError::Domain),
        ] {
            assert_eq!(split(input), Err(why), "{input:?}");
        }
        let long_tag = format!("h.io/x:{}", "t".repeat(129));
        assert_eq!(split(&long_tag), Err(ParseError::Tag));
        let long_repo = format!("h.io/{}", "a".repeat(256));
        assert_eq!(split(&long_repo), Err(ParseError::TooLong));
        // `library/` counts towards the limit, as in distribution.
        assert_eq!(split(&"a".repeat(250)), Err(ParseError::TooLong));
        assert!(split(&format!("h.io/{}@{d}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for s in [
            "\u{0}",
            "@",
            ":",
            "/",
            "::",
            "@@",
            "a@:",
            "h.io:/:@",
            "\u{202e}a",
            "é/é:é@é",
            "a-_-b",
            "a.-b",
            "a_-b",
        ] {
            let _ = split(s);
        }
    }
}
