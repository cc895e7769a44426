//! Falco's `glob` operator: `*`, `?`, `[a-z]` and `[!x]` classes and `\`
//! escapes, parsed once when a rule compiles and matched without
//! backtracking blow-up (one remembered star).

#[derive(Debug, Clone, PartialEq)]
pub enum GlobTok {
    Lit(char),
    Any,
    Star,
    Class(Vec<(char, char)>, bool),
}

/// Parses a pattern into tokens; a `[` that never closes is a literal.
pub fn parse_glob(p: &str) -> Box<[GlobTok]> {
    let mut out = Vec::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(GlobTok::Star),
            '?' => out.push(GlobTok::Any),
            '\\' => out.push(GlobTok::Lit(chars.next().unwrap_or('\\'))),
            '[' => {
                let mut ranges = Vec::new();
                let neg = chars.peek() == Some(&'!') || chars.peek() == Some(&'^');
                if neg {
                    chars.next();
                }
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == ']' && !ranges.is_empty() {
                        closed = true;
                        break;
                    }
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') | None => {
                                ranges.push((c, c));
                                ranges.push(('-', '-'));
                                closed = true;
                                break;
                            }
                            Some(e) => ranges.push((c, e)),
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                if closed {
                    out.push(GlobTok::Class(ranges, neg));
                } else {
                    out.push(GlobTok::Lit('['));
                }
            }
            c => out.push(GlobTok::Lit(c)),
        }
    }
    out.into_boxed_slice()
}

/// Shell-style match (`*` crosses `/`, as in Falco's glob).
pub fn glob_match(p: &[GlobTok], s: &str, fold: bool) -> bool {
    let s: Vec<char> = if fold {
        s.to_lowercase().chars().collect()
    } else {
        s.chars().collect()
    };
    let eq = |a: char, b: char| {
        if fold {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let ok = match p.get(pi) {
            Some(GlobTok::Lit(c)) => eq(*c, s[si]),
            Some(GlobTok::Any) => true,
            Some(GlobTok::Class(r, neg)) => {
                r.iter().any(|(a, b)| *a <= s[si] && s[si] <= *b) != *neg
            }
            Some(GlobTok::Star) => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            None => false,
        };
        if ok {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|t| *t == GlobTok::Star)
}
