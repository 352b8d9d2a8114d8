//! CloudFront-style path patterns for `routes[].match`.
//!
//! `*` matches any run of characters, `/` included; `?` matches exactly one character;
//! everything else is literal and case-sensitive. A pattern matches the whole path (not the
//! query string). `matches` runs on every request, so it is the classic two-pointer wildcard
//! algorithm: no regex, no allocation, O(pattern × path) worst case instead of exponential
//! backtracking.

use std::fmt;

/// A compiled `routes[].match` pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    /// The pattern with runs of `*` collapsed to one (same meaning, less backtracking).
    pattern: String,
}

impl Glob {
    /// Checks and compiles a pattern. It must start with `/` or be exactly `*`, and must not
    /// contain whitespace or control characters (request paths never do; they arrive
    /// percent-encoded).
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err(
                "empty pattern. Fix: write a path pattern such as /premium/* (or * for everything)"
                    .into(),
            );
        }
        if !pattern.starts_with('/') && pattern != "*" {
            return Err(format!(
                "pattern '{pattern}' must start with '/' (or be '*' to match everything). \
                 Fix: write it as '/{}'",
                pattern.trim_start_matches('/')
            ));
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "pattern '{}' contains the character {c:?}, which request paths never do \
                 (they are percent-encoded). Fix: write it as it appears on the wire, e.g. %20",
                pattern.escape_debug()
            ));
        }
        let mut collapsed = String::with_capacity(pattern.len());
        for c in pattern.chars() {
            if !(c == '*' && collapsed.ends_with('*')) {
                collapsed.push(c);
            }
        }
        Ok(Glob { pattern: collapsed })
    }

    /// The pattern (runs of `*` collapsed).
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Does `path` (without the query string) match the whole pattern?
    pub fn matches(&self, path: &str) -> bool {
        self.run(path, &mut ())
    }

    /// [`Glob::matches`], counting the loop's steps in `steps` (the counting compiles away in
    /// `matches`, whose `()` counter does nothing).
    fn run(&self, path: &str, steps: &mut impl Steps) -> bool {
        let p = self.pattern.as_bytes();
        let t = path.as_bytes();
        let (mut pi, mut ti) = (0usize, 0usize);
        // Where to resume after the most recent `*`: (pattern index after it, text index it
        // currently extends to). Only the latest star needs revisiting: any earlier star's
        // extra characters can be absorbed by the latest one.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            steps.step();
            if let Some(&pc) = p.get(pi) {
                if pc == b'*' {
                    if pi + 1 == p.len() {
                        // a final `*` takes whatever is left: the usual `/prefix/*` route
                        // matches here, without a step per remaining character
                        return true;
                    }
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                if pc == b'?' {
                    // One character, not one byte: step over a whole UTF-8 sequence.
                    ti += utf8_len(t[ti]);
                    pi += 1;
                    continue;
                }
                if pc == t[ti] {
                    pi += 1;
                    ti += 1;
                    continue;
                }
            }
            match star {
                Some((after_star, extent)) => {
                    let extent = extent + utf8_len(t[extent]);
                    star = Some((after_star, extent));
                    pi = after_star;
                    ti = extent;
                }
                None => return false,
            }
        }
        while p.get(pi) == Some(&b'*') {
            pi += 1;
        }
        pi == p.len()
    }
}

/// A step counter for [`Glob::run`].
trait Steps {
    fn step(&mut self);
}

impl Steps for () {
    #[inline(always)]
    fn step(&mut self) {}
}

impl Steps for usize {
    fn step(&mut self) {
        *self += 1;
    }
}

/// Length of the UTF-8 sequence that starts with `lead` (1 for ASCII and stray bytes).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).expect(pattern).matches(path)
    }

    #[test]
    fn match_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "/", true),
            ("*", "/anything/at/all", true),
            ("*", "", true),
            ("/*", "/", true),
            ("/*", "/a/b/c", true),
            ("/*", "", false),
            ("/premium/*", "/premium/", true),
            ("/premium/*", "/premium/a/b.html", true),
            ("/premium/*", "/premium", false),
            ("/premium/*", "/premiumx/a", false),
            ("/premium/*", "/free/premium/a", false),
            ("/premium*", "/premium", true),
            ("/premium*", "/premium-plus/x", true),
            ("/index.html", "/index.html", true),
            ("/index.html", "/index.htm", false),
            ("/index.html", "/index.html/", false),
            ("/index.html", "/Index.html", false),
            ("/a?c", "/abc", true),
            ("/a?c", "/ac", false),
            ("/a?c", "/abbc", false),
            ("/a?c", "/a/c", true),
            ("/a?c", "/aéc", true),
            ("/?", "/é", true),
            ("/??", "/é", false),
            ("/*.jpg", "/img/x.jpg", true),
            ("/*.jpg", "/img/x.jpg.png", false),
            ("/*.jpg", "/img/x.jpgjpg.jpg", true),
            ("/*/index.m3u8", "/video/abc/index.m3u8", true),
            ("/*/index.m3u8", "/index.m3u8", false),
            ("/video/*/seg-?.ts", "/video/a/b/seg-1.ts", true),
            ("/video/*/seg-?.ts", "/video/a/b/seg-12.ts", false),
            ("/a*b*c", "/aXbYc", true),
            ("/a*b*c", "/abc", true),
            ("/a*b*c", "/acb", false),
            ("/a*b*c", "/abcbcbc", true),
            ("/a*b*c", "/abcbcbx", false),
            ("/*é*", "/café/x", true),
            ("/*é*", "/cafe/x", false),
            ("/a**b", "/a/x/b", true),
            ("/*?", "/", false),
            ("/*?", "/x", true),
        ];
        for &(pattern, path, want) in table {
            assert_eq!(m(pattern, path), want, "{pattern:?} vs {path:?}");
        }
    }

    #[test]
    fn no_exponential_backtracking() {
        // A classic pathological case for naive recursive matchers.
        let pattern = format!("/{}b", "a*".repeat(30));
        let path = format!("/{}", "a".repeat(5000));
        let glob = Glob::new(&pattern).expect("pattern");
        // Steps, not seconds: the loop runs at most (pattern + 1) × (path + 1) times, where a
        // backtracking matcher would run ~path^30 times.
        let mut steps = 0usize;
        assert!(!glob.run(&path, &mut steps));
        let bound = (pattern.len() + 1) * (path.len() + 1);
        assert!(steps <= bound, "{steps} steps > {bound}");
        assert!(!glob.matches(&path));
        // and it grows linearly with the path here: twice the path, about twice the steps
        let mut longer = 0usize;
        assert!(!glob.run(&format!("/{}", "a".repeat(10_000)), &mut longer));
        assert!(
            longer <= 2 * steps + 64,
            "{steps} steps, then {longer} for twice the path"
        );
    }

    #[test]
    fn a_final_star_ends_the_match_at_once() {
        let glob = Glob::new("/premium/*").expect("glob");
        let path = format!("/premium/{}", "a".repeat(1000));
        let mut steps = 0usize;
        assert!(glob.run(&path, &mut steps));
        assert_eq!(steps, "/premium/*".len());
        // a star before the end still searches
        let mut steps = 0usize;
        assert!(Glob::new("/*a").expect("glob").run(&path, &mut steps));
        assert!(steps > path.len(), "{steps}");
    }

    #[test]
    fn stars_collapse() {
        assert_eq!(Glob::new("/a***b").expect("glob").as_str(), "/a*b");
        assert!(Glob::new("**").is_err());
    }

    #[test]
    fn invalid_patterns() {
        let err = Glob::new("premium/*").expect_err("no slash");
        assert!(err.contains("must start with '/'"), "{err}");
        assert!(err.contains("'/premium/*'"), "{err}");
        assert!(Glob::new("").expect_err("empty").contains("empty pattern"));
        assert!(Glob::new("/a b").expect_err("space").contains("%20"));
        assert!(Glob::new("/a\tb").is_err());
        assert!(Glob::new("*.jpg").is_err());
    }
}
