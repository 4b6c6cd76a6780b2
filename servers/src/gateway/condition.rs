//! Send conditions over topics, as FCM writes them: `'a' in topics && ('b' in topics || !('c'
//! in topics))`. `&&` binds tighter than `||`; `!` negates; parentheses group.
//!
//! Like FCM, a condition may name at most [`MAX_TOPICS`] topics. Nesting is capped too, so a
//! hostile condition cannot exhaust the parser's stack.

use super::topic::{normalize_topic, TopicName};

/// Most topics one condition may name (FCM's limit).
pub const MAX_TOPICS: usize = 5;

/// Deepest nesting of parentheses and `!` accepted.
const MAX_DEPTH: usize = 16;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The distinct topics named, in order of first mention.
    topics: Vec<TopicName>,
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// `'name' in topics`: an index into [`Condition::topics`].
    In(usize),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
}

impl Condition {
    /// Parses `text`, or says what is wrong with it and where.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let mut p = Parser {
            text,
            pos: 0,
            topics: Vec::new(),
        };
        let root = p.or(0)?;
        p.skip_space();
        if p.pos != text.len() {
            return Err(p.error("expected && or || or the end"));
        }
        Ok(Condition {
            topics: p.topics,
            root,
        })
    }

    /// The topics the condition names.
    pub fn topics(&self) -> &[TopicName] {
        &self.topics
    }

    /// Whether a device subscribed to the topics for which `subscribed(i)` (an index into
    /// [`Self::topics`]) holds matches.
    pub fn matches(&self, subscribed: &dyn Fn(usize) -> bool) -> bool {
        fn eval(n: &Node, f: &dyn Fn(usize) -> bool) -> bool {
            match n {
                Node::In(i) => f(*i),
                Node::Not(a) => !eval(a, f),
                Node::And(a, b) => eval(a, f) && eval(b, f),
                Node::Or(a, b) => eval(a, f) || eval(b, f),
            }
        }
        eval(&self.root, subscribed)
    }

    /// Whether a device in none of the named topics matches (possible only through `!`): then
    /// every device must be considered, not just the named topics' members.
    pub fn matches_outsiders(&self) -> bool {
        self.matches(&|_| false)
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    topics: Vec<TopicName>,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("Invalid condition at character {}: {what}", self.pos + 1)
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len();
            return true;
        }
        false
    }

    fn or(&mut self, depth: usize) -> Result<Node, String> {
        let mut left = self.and(depth)?;
        while self.eat("||") {
            let right = self.and(depth)?;
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Node, String> {
        let mut left = self.unary(depth)?;
        while self.eat("&&") {
            let right = self.unary(depth)?;
            left = Node::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        if self.eat("!") {
            return Ok(Node::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat("(") {
            let inner = self.or(depth + 1)?;
            if !self.eat(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        self.membership()
    }

    /// `'name' in topics` (either quote).
    fn membership(&mut self) -> Result<Node, String> {
        self.skip_space();
        let rest = &self.text[self.pos..];
        let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            return Err(self.error("expected a quoted topic name, ( or !"));
        };
        let Some(len) = rest[1..].find(quote) else {
            return Err(self.error("unterminated topic name"));
        };
        let name = normalize_topic(&rest[1..1 + len]).map_err(|e| self.error(&e))?;
        self.pos += len + 2;
        if !self.eat("in") || !self.eat("topics") {
            return Err(self.error("expected `in topics` after the topic name"));
        }
        let index = match self.topics.iter().position(|t| *t == name) {
            Some(i) => i,
            None => {
                if self.topics.len() == MAX_TOPICS {
                    return Err(format!(
                        "Invalid condition: at most {MAX_TOPICS} topics may be named"
                    ));
                }
                self.topics.push(name);
                self.topics.len() - 1
            }
        };
        Ok(Node::In(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cond: &str, subscribed: &[&str]) -> bool {
        let c = Condition::parse(cond).unwrap();
        c.matches(&|i| subscribed.contains(&&*c.topics()[i]))
    }

    #[test]
    fn precedence_parentheses_and_negation() {
        let c = "'a' in topics && 'b' in topics";
        assert!(check(c, &["a", "b"]));
        assert!(!check(c, &["a"]));
        // && binds tighter: a || (b && c).
        let c = "'a' in topics || 'b' in topics && 'c' in topics";
        assert!(check(c, &["a"]));
        assert!(!check(c, &["b"]));
        assert!(check(c, &["b", "c"]));
        let c = "('a' in topics || 'b' in topics) && \"c\" in topics";
        assert!(!check(c, &["a"]));
        assert!(check(c, &["b", "c"]));
        let c = "'a' in topics && !('b' in topics)";
        assert!(check(c, &["a"]));
        assert!(!check(c, &["a", "b"]));
        assert!(!Condition::parse(c).unwrap().matches_outsiders());
        assert!(Condition::parse("!('a' in topics)")
            .unwrap()
            .matches_outsiders());
        // Repeated names count once; `/topics/` prefixes are accepted.
        let c = Condition::parse("'a' in topics || '/topics/a' in topics").unwrap();
        assert_eq!(c.topics().len(), 1);
    }

    #[test]
    fn refuses_bad_conditions() {
        for bad in [
            "",
            "'a' in topics &&",
            "'a' in topic",
            "'a in topics",
            "('a' in topics",
            "'a' in topics 'b' in topics",
            "'a b' in topics",
            "'a' in topics & 'b' in topics",
            "'1' in topics || '2' in topics || '3' in topics || '4' in topics || '5' in topics || '6' in topics",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
        let nest = |n: usize| format!("{}'a' in topics{}", "(".repeat(n), ")".repeat(n));
        assert!(Condition::parse(&nest(MAX_DEPTH)).is_ok());
        assert!(Condition::parse(&nest(MAX_DEPTH + 1))
            .unwrap_err()
            .contains("deeply"));
    }
}
