//! Go's `path.Clean`, the one copy: the engine cleans bind sources with it, and gorilla/mux
//! cleans request paths with it before routing (`sidecar::path`).

/// Go's `path.Clean`: the shortest path naming the same place by lexical processing alone —
/// repeated slashes become one, `.` segments go, a `..` removes the segment before it (at the
/// root it is dropped, in a relative path with nothing left to remove it stays), no trailing
/// slash but the root's, and an empty result is `.`.
pub fn path_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in p.split('/') {
        match segment {
            "" | "." => {}
            ".." => match segments.last() {
                Some(&last) if last != ".." => {
                    segments.pop();
                }
                _ if rooted => {}
                _ => segments.push(".."),
            },
            s => segments.push(s),
        }
    }
    let joined = segments.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own table (`path/path_test.go` cleantests), plus what the engine meets.
    #[test]
    fn like_go() {
        for (input, want) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("/abc/", "/abc"),
            ("//", "/"),
            ("//abc", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("//a//b/", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/../x", "/x"),
            ("/a/..", "/"),
            ("/a/.../b", "/a/.../b"),
        ] {
            assert_eq!(path_clean(input), want, "{input:?}");
        }
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn clean_is_idempotent(s in "/?[a-z./]{0,30}") {
                let once = path_clean(&s);
                prop_assert_eq!(path_clean(&once), once);
            }
        }
    }
}
