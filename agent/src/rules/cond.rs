//! Falco's condition syntax: tokens and the expression tree, before any
//! field or macro is resolved. Offsets are byte offsets into the condition
//! text, which the loader turns into `file:line:col`.
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `field op value`, or `field exists`.
    Check(Check),
    /// A bare name: a macro reference.
    Macro {
        name: String,
        at: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Field name as written, e.g. `proc.aname[2]` or `evt.arg.flags`.
    pub field: String,
    pub field_at: usize,
    pub op: Op,
    pub op_at: usize,
    pub rhs: Rhs,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    None,
    One(Item),
    List(Vec<Item>),
}

/// A value in a condition: bare words may name a list, quoted ones never do.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub text: String,
    pub quoted: bool,
    pub at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Intersects,
    Pmatch,
    Contains,
    IContains,
    BContains,
    StartsWith,
    BStartsWith,
    EndsWith,
    Glob,
    IGlob,
    Regex,
    Exists,
}

impl Op {
    fn from_word(w: &str) -> Option<Op> {
        Some(match w {
            "in" => Op::In,
            "intersects" => Op::Intersects,
            "pmatch" => Op::Pmatch,
            "contains" => Op::Contains,
            "icontains" => Op::IContains,
            "bcontains" => Op::BContains,
            "startswith" => Op::StartsWith,
            "bstartswith" => Op::BStartsWith,
            "endswith" => Op::EndsWith,
            "glob" => Op::Glob,
            "iglob" => Op::IGlob,
            "regex" => Op::Regex,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::Intersects => "intersects",
            Op::Pmatch => "pmatch",
            Op::Contains => "contains",
            Op::IContains => "icontains",
            Op::BContains => "bcontains",
            Op::StartsWith => "startswith",
            Op::BStartsWith => "bstartswith",
            Op::EndsWith => "endswith",
            Op::Glob => "glob",
            Op::IGlob => "iglob",
            Op::Regex => "regex",
            Op::Exists => "exists",
        }
    }

    /// Operators whose right side is a parenthesized list.
    pub fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Intersects | Op::Pmatch)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A syntax error at a byte offset of the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Sym(Op),
    Word(String),
    Quoted(String),
}

struct Lexer<'a> {
    src: &'a str,
    at: usize,
}

/// Characters that end a bare word.
fn is_delim(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ',' | '=' | '<' | '>' | '!' | '"' | '\'')
}

impl Lexer<'_> {
    fn next(&mut self) -> Result<Option<(Tok, usize)>, SyntaxError> {
        let rest = &self.src[self.at..];
        let trimmed = rest.trim_start();
        self.at += rest.len() - trimmed.len();
        let start = self.at;
        let Some(c) = trimmed.chars().next() else {
            return Ok(None);
        };
        let two = trimmed.get(..2).unwrap_or("");
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            _ if two == "==" => (Tok::Sym(Op::Eq), 2),
            _ if two == "!=" => (Tok::Sym(Op::Ne), 2),
            _ if two == "<=" => (Tok::Sym(Op::Le), 2),
            _ if two == ">=" => (Tok::Sym(Op::Ge), 2),
            '=' => (Tok::Sym(Op::Eq), 1),
            '<' => (Tok::Sym(Op::Lt), 1),
            '>' => (Tok::Sym(Op::Gt), 1),
            '!' => {
                return Err(SyntaxError {
                    at: start,
                    message: "unexpected `!`; use `not` or `!=`".into(),
                })
            }
            '"' | '\'' => return self.quoted(c, start).map(Some),
            _ => {
                let mut end = trimmed.len();
                // `[...]` belongs to the word: `proc.aname[2]`, `fd.types[]`.
                let mut depth = 0;
                for (i, ch) in trimmed.char_indices() {
                    match ch {
                        '[' => depth += 1,
                        ']' if depth > 0 => depth -= 1,
                        _ if depth == 0 && is_delim(ch) => {
                            end = i;
                            break;
                        }
                        _ => {}
                    }
                }
                (Tok::Word(trimmed[..end].to_string()), end)
            }
        };
        self.at += len;
        Ok(Some((tok, start)))
    }

    fn quoted(&mut self, q: char, start: usize) -> Result<(Tok, usize), SyntaxError> {
        let body = &self.src[start + 1..];
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.at = start + 1 + i + 1;
                return Ok((Tok::Quoted(out), start));
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, e)) if e == q || e == '\\' => out.push(e),
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        Err(SyntaxError {
            at: start,
            message: format!("unterminated string starting with {q}"),
        })
    }
}

/// Parses a whole condition.
pub fn parse(src: &str) -> Result<Expr, SyntaxError> {
    let mut lx = Lexer { src, at: 0 };
    let mut toks = Vec::new();
    while let Some(t) = lx.next()? {
        toks.push(t);
    }
    let mut p = Parser {
        toks,
        i: 0,
        end: src.len(),
        depth: 0,
    };
    if p.toks.is_empty() {
        return Err(SyntaxError {
            at: 0,
            message: "empty condition".into(),
        });
    }
    let e = p.or()?;
    if let Some((t, at)) = p.toks.get(p.i) {
        return Err(SyntaxError {
            at: *at,
            message: format!(
                "unexpected {}; expected `and`, `or` or the end",
                describe(t)
            ),
        });
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Sym(op) => format!("`{op}`"),
        Tok::Word(w) => format!("`{w}`"),
        Tok::Quoted(s) => format!("string \"{s}\""),
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    end: usize,
    /// Nesting of parentheses and `not`, bounded so a hostile condition
    /// cannot exhaust the stack.
    depth: usize,
}

/// Deepest nesting a condition may have.
const MAX_DEPTH: usize = 200;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }

    fn here(&self) -> usize {
        self.toks.get(self.i).map_or(self.end, |(_, at)| *at)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        self.chain("or", Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        self.chain("and", Self::unary, Expr::And)
    }

    /// `item (word item)*`: one item as itself, several joined by `join`.
    fn chain(
        &mut self,
        word: &str,
        item: fn(&mut Self) -> Result<Expr, SyntaxError>,
        join: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, SyntaxError> {
        let mut items = vec![item(self)?];
        while self.is_word(word) {
            self.i += 1;
            items.push(item(self)?);
        }
        Ok(match items.len() {
            1 => items.swap_remove(0),
            _ => join(items),
        })
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError {
                at: self.here(),
                message: format!("condition nested more than {MAX_DEPTH} levels deep"),
            });
        }
        let r = if self.is_word("not") {
            self.i += 1;
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        r
    }

    fn expected(&self, what: &str) -> SyntaxError {
        SyntaxError {
            at: self.here(),
            message: match self.peek() {
                Some(t) => format!("expected {what}, found {}", describe(t)),
                None => format!("expected {what}, found the end of the condition"),
            },
        }
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        match self.toks.get(self.i).cloned() {
            Some((Tok::LParen, _)) => {
                self.i += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.expected("`)`"));
                }
                self.i += 1;
                Ok(e)
            }
            Some((Tok::Word(w), at)) if !matches!(w.as_str(), "and" | "or") => {
                self.i += 1;
                let op = match self.peek() {
                    Some(Tok::Sym(op)) => Some(*op),
                    Some(Tok::Word(x)) => Op::from_word(x),
                    _ => None,
                };
                let Some(op) = op else {
                    return Ok(Expr::Macro { name: w, at });
                };
                let op_at = self.here();
                self.i += 1;
                let rhs = self.rhs(op)?;
                Ok(Expr::Check(Check {
                    field: w,
                    field_at: at,
                    op,
                    op_at,
                    rhs,
                }))
            }
            _ => Err(self.expected("a field, a macro, `not` or `(`")),
        }
    }

    fn rhs(&mut self, op: Op) -> Result<Rhs, SyntaxError> {
        if op == Op::Exists {
            return Ok(Rhs::None);
        }
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let mut items = Vec::new();
            loop {
                match self.toks.get(self.i).cloned() {
                    Some((Tok::RParen, _)) => {
                        self.i += 1;
                        break;
                    }
                    Some((Tok::Word(text), at)) => items.push(Item {
                        text,
                        quoted: false,
                        at,
                    }),
                    Some((Tok::Quoted(text), at)) => items.push(Item {
                        text,
                        quoted: true,
                        at,
                    }),
                    _ => return Err(self.expected("a value or `)`")),
                }
                self.i += 1;
                match self.peek() {
                    Some(Tok::Comma) => self.i += 1,
                    Some(Tok::RParen) => {}
                    _ => return Err(self.expected("`,` or `)`")),
                }
            }
            return Ok(Rhs::List(items));
        }
        match self.toks.get(self.i).cloned() {
            Some((Tok::Word(text), at)) => {
                self.i += 1;
                Ok(Rhs::One(Item {
                    text,
                    quoted: false,
                    at,
                }))
            }
            Some((Tok::Quoted(text), at)) => {
                self.i += 1;
                Ok(Rhs::One(Item {
                    text,
                    quoted: true,
                    at,
                }))
            }
            // `evt.dir = <`: a direction is written as a bare `<` or `>`.
            Some((Tok::Sym(sym @ (Op::Lt | Op::Gt)), at)) => {
                self.i += 1;
                Ok(Rhs::One(Item {
                    text: sym.name().to_string(),
                    quoted: false,
                    at,
                }))
            }
            _ => Err(self.expected(&format!("a value after `{op}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: &Expr) -> &Check {
        match e {
            Expr::Check(c) => c,
            other => panic!("not a check: {other:?}"),
        }
    }

    #[test]
    fn precedence_not_and_or() {
        let e = parse("a or not b and c").unwrap();
        let Expr::Or(items) = e else { panic!() };
        assert_eq!(items.len(), 2);
        let Expr::And(ands) = &items[1] else { panic!() };
        assert!(matches!(&ands[0], Expr::Not(_)));
    }

    #[test]
    fn checks_values_lists_and_quotes() {
        let e = parse(r#"evt.type in (open, "openat") and fd.name startswith '/etc/' and proc.aname[2]=sshd and fd.name exists"#).unwrap();
        let Expr::And(items) = e else { panic!() };
        let c = check(&items[0]);
        assert_eq!(c.op, Op::In);
        let Rhs::List(l) = &c.rhs else { panic!() };
        assert_eq!((l[0].text.as_str(), l[0].quoted), ("open", false));
        assert_eq!((l[1].text.as_str(), l[1].quoted), ("openat", true));
        assert_eq!(
            check(&items[1]).rhs,
            Rhs::One(Item {
                text: "/etc/".into(),
                quoted: true,
                at: 52
            })
        );
        assert_eq!(check(&items[2]).field, "proc.aname[2]");
        assert_eq!(check(&items[3]).op, Op::Exists);
    }

    #[test]
    fn bare_values_keep_slashes_dots_and_stars() {
        let e = parse("fd.name glob /etc/*.conf and fd.sip != 10.0.0.1").unwrap();
        let Expr::And(items) = e else { panic!() };
        assert_eq!(
            check(&items[0]).rhs,
            Rhs::One(Item {
                text: "/etc/*.conf".into(),
                quoted: false,
                at: 13
            })
        );
        assert_eq!(check(&items[1]).op, Op::Ne);
    }

    #[test]
    fn errors_point_at_the_token() {
        let e = parse("proc.name = bash and (").unwrap_err();
        assert_eq!(e.at, 22);
        let e = parse("proc.name in (a b)").unwrap_err();
        assert_eq!(e.at, 16, "{}", e.message);
        let e = parse("proc.name = 'x").unwrap_err();
        assert_eq!(e.at, 12);
        let e = parse("a and or b").unwrap_err();
        assert_eq!(e.at, 6);
        let e = parse("proc.name =").unwrap_err();
        assert_eq!(e.at, 11);
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}a = b{}", "(".repeat(100_000), ")".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested more than"), "{}", e.message);
        let nots = format!("{}a = b", "not ".repeat(100_000));
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn macros_are_bare_names() {
        assert_eq!(
            parse("spawned_process").unwrap(),
            Expr::Macro {
                name: "spawned_process".into(),
                at: 0
            }
        );
    }
}
