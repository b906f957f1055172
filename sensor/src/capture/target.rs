//! The request target as a server resolves it, for rules that match paths
//! (`http.path_normalized`): a client can spell `/admin/` many ways a server
//! accepts (`//admin/`, `/./admin/`, `/%61dmin/`, `/x/../admin/`,
//! `/admin;x/`, `/admin\`, `http://host/admin/`) and a rule matching the raw
//! target would miss every one. The raw target stays in `http.path`.

/// Normalise a request target's bytes (as sent, query already masked by the
/// kernel): absolute-form scheme and authority dropped, query and fragment
/// cut, `%XX` decoded once, `\` read as `/`, `;params` dropped from each
/// segment, repeated slashes merged, `.` and `..` segments resolved (never
/// above the root). Returns `None` for targets that are not a path
/// (`*`, authority-form `host:port`, empty).
pub fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let mut t = raw;
    if !t.starts_with(b"/") && !t.starts_with(b"\\") {
        // absolute-form: scheme "://" authority path
        let sep = find(t, b"://")?;
        if sep == 0
            || !t[..sep]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
        {
            return None;
        }
        let after = &t[sep + 3..];
        let path_at = after
            .iter()
            .position(|&c| c == b'/' || c == b'\\' || c == b'?' || c == b'#');
        t = match path_at {
            Some(i) if after[i] == b'/' || after[i] == b'\\' => &after[i..],
            _ => b"/",
        };
    }
    let end = t
        .iter()
        .position(|&c| c == b'?' || c == b'#')
        .unwrap_or(t.len());
    let t = &t[..end];

    // %XX decoded once (a lone or broken % stays as it is), then \ as /.
    let mut decoded = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'%' && i + 2 < t.len() {
            if let (Some(h), Some(l)) = (hex(t[i + 1]), hex(t[i + 2])) {
                decoded.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        decoded.push(t[i]);
        i += 1;
    }
    for b in decoded.iter_mut() {
        if *b == b'\\' {
            *b = b'/';
        }
    }

    // Segments: ;params dropped, empty ones merged, dot segments resolved.
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = decoded.ends_with(b"/");
    for seg in decoded.split(|&c| c == b'/') {
        let seg = match seg.iter().position(|&c| c == b';') {
            Some(p) => &seg[..p],
            None => seg,
        };
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len() + 1);
    for s in &out {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    // A directory stays one: "/admin/" (and "/admin/." or "/x/..") end in "/".
    let last = decoded.rsplit(|&c| c == b'/').next().unwrap_or(b"");
    if path.is_empty() || trailing || last == b"." || last == b".." {
        path.push(b'/');
    }
    Some(path)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(s: &str) -> String {
        String::from_utf8(normalize(s.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn every_spelling_of_a_protected_path_a_server_accepts_is_the_same() {
        for spelling in [
            "/admin/",
            "//admin/",
            "/./admin/",
            "/%61dmin/",
            "/x/../admin/",
            "/admin;x/",
            "/admin//",
            "/%2e/admin/",
            "/x/%2e%2e/admin/",
            "http://host/admin/",
            "HTTP://host:8080/admin/",
            "/admin\\",
            "\\admin\\",
            "/../../admin/",
            "/admin/.",
            "/admin/x/..",
        ] {
            assert_eq!(n(spelling), "/admin/", "{spelling}");
        }
        assert_eq!(n("/admin%2findex.html"), "/admin/index.html");
        assert_eq!(n("/admin/index.html?x=1#f"), "/admin/index.html");
        assert_eq!(n("/admin"), "/admin");
        assert_eq!(n("/"), "/");
        assert_eq!(n("http://host"), "/");
        assert_eq!(n("http://host?x"), "/");
        assert_eq!(n("/a%zz/%"), "/a%zz/%");
    }

    #[test]
    fn what_is_not_a_path_gives_none() {
        assert!(normalize(b"*").is_none());
        assert!(normalize(b"host:443").is_none());
        assert!(normalize(b"").is_none());
        assert!(normalize(b"://x/").is_none());
    }
}
