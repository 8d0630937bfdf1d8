//! Where a task's files live on its agent: `sandboxes/<framework>/<task>/`,
//! each id turned into directory names that are
//!
//! - **injective**: two different ids never share a directory (`a/b` and
//!   `a_b` do not meet), because every byte outside `[A-Za-z0-9-_.]` is
//!   percent-encoded (`a%2Fb`), `%` included;
//! - **never `.`, `..` or empty**: an id made only of dots has every dot
//!   encoded (`%2E%2E`), the empty id is `%`;
//! - **at most 255 bytes per name** (the file-system limit): an id whose
//!   encoding is longer is written in hex over several names, `%x<hex>/…/%y<hex>`
//!   (`%x` and `%y` never occur in the short form, whose escapes are
//!   upper-case hex);
//! - **prefix-free**: no task's directory lies inside another's, so removing
//!   one sandbox can never remove another.
//!
//! [`remove`] deletes a sandbox only if its path is strictly below the root
//! and made of plain names.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// Longest file name most file systems accept.
const MAX_NAME: usize = 255;
/// Hex digits per name in the long form (2 marker bytes + 250 ≤ 255).
const HEX_PER_NAME: usize = 250;

fn percent_encode(id: &str) -> String {
    if id.is_empty() {
        return "%".into();
    }
    let only_dots = id.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if plain && !only_dots {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The directory names for one id (one name unless the id is very long).
pub fn names(id: &str) -> Vec<String> {
    let short = percent_encode(id);
    if short.len() <= MAX_NAME {
        return vec![short];
    }
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    let n = hex.len().div_ceil(HEX_PER_NAME);
    (0..n)
        .map(|i| {
            let chunk = hex
                .get(i * HEX_PER_NAME..((i + 1) * HEX_PER_NAME).min(hex.len()))
                .unwrap_or_default();
            let marker = if i + 1 == n { "%y" } else { "%x" };
            format!("{marker}{chunk}")
        })
        .collect()
}

/// The sandbox of `task` of `framework` under `root`.
pub fn dir(root: &Path, framework: &str, task: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for n in names(framework).into_iter().chain(names(task)) {
        p.push(n);
    }
    p
}

/// Removes the sandbox `dir` — only if it lies strictly below `root` and
/// its path below `root` is made of plain names (no `.`, `..`, root or
/// prefix components), so a malformed path can never reach further.
pub fn remove(root: &Path, dir: &Path) -> std::io::Result<()> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        std::io::Error::other(format!(
            "{} is not under the sandbox root {}",
            dir.display(),
            root.display()
        ))
    })?;
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || rel.components().count() < 2 {
        return Err(std::io::Error::other(format!(
            "{} is not a task sandbox under {}",
            dir.display(),
            root.display()
        )));
    }
    std::fs::remove_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reverses [`names`]: proves no information is lost.
    fn decode(names: &[String]) -> Vec<u8> {
        if names[0].starts_with("%x") || names[0].starts_with("%y") {
            let hex: String = names.iter().map(|n| &n[2..]).collect();
            return (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
        }
        assert_eq!(names.len(), 1);
        let s = names[0].as_bytes();
        if s == b"%" {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i] == b'%' {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(&s[i + 1..i + 3]).unwrap(), 16).unwrap(),
                );
                i += 3;
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        out
    }

    fn sane(names: &[String]) {
        for n in names {
            assert!(!n.is_empty() && n != "." && n != "..", "{names:?}");
            assert!(!n.contains('/') && !n.contains('\0'), "{names:?}");
            assert!(n.len() <= MAX_NAME, "{} bytes: {n}", n.len());
        }
    }

    #[test]
    fn ids_that_sanitized_alike_get_their_own_directories() {
        let root = Path::new("/w/sandboxes");
        assert_ne!(dir(root, "f", "a/b"), dir(root, "f", "a_b"));
        assert_eq!(dir(root, "f", "a/b"), root.join("f").join("a%2Fb"));
        assert_eq!(
            dir(root, "f", "web.1-x_y"),
            root.join("f").join("web.1-x_y")
        );
        assert_eq!(dir(root, "f", "a%2Fb"), root.join("f").join("a%252Fb"));
    }

    #[test]
    fn dot_ids_and_the_empty_id_stay_inside_the_framework_directory() {
        let root = Path::new("/w/sandboxes");
        for (id, name) in [
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("", "%"),
            ("...", "%2E%2E%2E"),
        ] {
            let d = dir(root, "f", id);
            assert_eq!(d, root.join("f").join(name));
            assert_eq!(d.parent(), Some(root.join("f").as_path()));
        }
        assert_eq!(
            dir(root, "..", "..").parent(),
            Some(root.join("%2E%2E").as_path())
        );
    }

    #[test]
    fn long_ids_are_split_into_names_the_file_system_accepts() {
        let id = "/".repeat(255);
        let n = names(&id);
        assert_eq!(n.len(), 3, "{n:?}");
        sane(&n);
        assert_eq!(decode(&n), id.as_bytes());
        // A dot tail after a long prefix never becomes `..`.
        let id = format!("{}..", "a".repeat(254));
        sane(&names(&id));
    }

    #[test]
    fn remove_refuses_paths_that_are_not_a_sandbox_below_the_root() {
        let tmp = std::env::temp_dir().join(format!("agora-sbx-{}", uuid::Uuid::new_v4().simple()));
        let root = tmp.join("sandboxes");
        std::fs::create_dir_all(root.join("f").join("keep")).unwrap();
        for bad in [
            root.join("f").join(".."),
            root.clone(),
            root.join("f"),
            tmp.clone(),
        ] {
            assert!(remove(&root, &bad).is_err(), "{}", bad.display());
        }
        assert!(root.join("f").join("keep").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }

    proptest! {
        #[test]
        fn names_are_injective_prefix_free_and_valid(
            a in "[a-z./_%:@-]{0,300}",
            b in "[a-z./_%:@-]{0,300}",
        ) {
            let (na, nb) = (names(&a), names(&b));
            sane(&na);
            sane(&nb);
            prop_assert_eq!(decode(&na), a.as_bytes());
            if a != b {
                prop_assert_ne!(&na, &nb);
                // Neither path is a prefix of the other (GC of one never reaches the other).
                let k = na.len().min(nb.len());
                prop_assert_ne!(&na[..k], &nb[..k]);
            }
        }
    }
}
