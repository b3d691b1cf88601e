//! ZooKeeper's path rules (its `PathUtils.validatePath`): what a client may
//! name, checked before a path reaches the tree, so the tree never holds
//! a name ZooKeeper would refuse.

/// Why a path is refused (ZooKeeper answers BADARGUMENTS with this text).
pub fn validate(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("Path length must be > 0".into());
    }
    if !path.starts_with('/') {
        return Err("Path must start with / character".into());
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("Path must not end with / character".into());
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err("empty node name specified".into()),
            "." | ".." => return Err("relative paths not allowed".into()),
            _ => {}
        }
    }
    for c in path.chars() {
        let refused = c == '\u{0}'
            || ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{f000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c);
        if refused {
            return Err(format!("invalid character @{c:?}"));
        }
    }
    Ok(())
}

/// The parent of a valid path other than `/`.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

/// The last segment of a valid path other than `/`.
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// `child` of `parent`, joined with one slash.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// True when `path` is `ancestor` or below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses_as_zookeeper_does() {
        for ok in ["/", "/a", "/a/b", "/a.b", "/..a", "/é"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//", "/a//b", "/.", "/a/..", "/a\0b", "/\u{7f}",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parents_names_and_ancestry() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/ab", "/"));
    }
}
