//! Kubernetes naming rules for what the operator writes: the ImagePosture name of an image
//! identity (a DNS label: at most 63 characters of `[a-z0-9-]`).

use sha2::{Digest as _, Sha256};

use crate::core::image::ImageId;

/// The ImagePosture name of an identity.
pub trait ResourceName {
    /// The ImagePosture name of this identity (see [`resource_name_of`]).
    fn resource_name(&self) -> String;
}

impl ResourceName for ImageId {
    fn resource_name(&self) -> String {
        resource_name_of(&self.repo_path(), &self.key())
    }
}

/// Deterministic, readable, unique resource name of at most 63 characters: a slug of the
/// repository path and the first 10 hex characters of the SHA-256 of `identity`.
pub fn resource_name_of(repo_path: &str, identity: &str) -> String {
    let hash = hex::encode(Sha256::digest(identity.as_bytes()));
    let slug = slug(repo_path);
    let slug = slug.trim_matches('-');
    let max_slug = 63 - 11;
    // Keep the end: the image name is more telling than the registry host. The slug is
    // ASCII, but count characters anyway so no input can cut one in half.
    let skip = slug.chars().count().saturating_sub(max_slug);
    let slug: String = slug.chars().skip(skip).collect();
    let slug = slug.trim_start_matches('-');
    let short: String = hash.chars().take(10).collect();
    if slug.is_empty() {
        format!("img-{short}")
    } else {
        format!("{slug}-{short}")
    }
}

/// Lower-case ASCII letters and digits of `text`, every other run of characters one `-`.
pub fn slug(text: &str) -> String {
    let mut slug = String::new();
    let mut last_dash = true;
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
            last_dash = false;
        } else if !last_dash {
            slug.push('-');
            last_dash = true;
        }
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::image::ImageRef;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_are_bounded_and_unique() {
        let a = ImageRef::parse(&format!(
            "{}/x@{D}",
            "very-long-host.example.com/deep/path/to/a/repository/with/many/segments"
        ))
        .unwrap()
        .id()
        .unwrap();
        let n = a.resource_name();
        assert!(n.len() <= 63, "{n}");
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let b = ImageId {
            digest: D.replace('0', "1"),
            ..a.clone()
        };
        assert_ne!(a.resource_name(), b.resource_name());
        let nginx = ImageRef::parse(&format!("nginx@{D}"))
            .unwrap()
            .id()
            .unwrap();
        assert!(nginx
            .resource_name()
            .starts_with("docker-io-library-nginx-"));
    }
}
