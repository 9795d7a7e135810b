//! The `calculator` tool: evaluates arithmetic with `+ - * /`, parentheses and decimals.

/// Longest expression accepted, in bytes.
const MAX_LEN: usize = 1_000;
/// Deepest nesting of parentheses and signs accepted.
const MAX_DEPTH: usize = 64;

/// Why an expression could not be evaluated.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("expression is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("unexpected {0} at position {1}")]
    Unexpected(String, usize),
    #[error("division by zero")]
    DivisionByZero,
    #[error("result is not a finite number")]
    NotFinite,
}

/// Evaluates `expression`, e.g. `(2 + 3.5) * -4 / 2`.
pub fn evaluate(expression: &str) -> Result<f64, CalcError> {
    if expression.len() > MAX_LEN {
        return Err(CalcError::TooLong);
    }
    let mut parser = Parser {
        chars: expression.char_indices().peekable(),
        depth: 0,
    };
    let value = parser.expression()?;
    if let Some(&(at, c)) = parser.peek() {
        return Err(CalcError::Unexpected(format!("`{c}`"), at));
    }
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::NotFinite)
    }
}

/// A result as people write it: at most 10 decimals, no trailing zeros.
pub fn format_number(value: f64) -> String {
    let text = format!("{value:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// Recursive descent over `expr = term (('+'|'-') term)*`, `term = factor (('*'|'/') factor)*`,
/// `factor = ('+'|'-') factor | number | '(' expr ')'`.
struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<&(usize, char)> {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        self.chars.peek()
    }

    fn expression(&mut self) -> Result<f64, CalcError> {
        let mut value = self.term()?;
        while let Some(&(_, op @ ('+' | '-'))) = self.peek() {
            self.chars.next();
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut value = self.factor()?;
        while let Some(&(_, op @ ('*' | '/'))) = self.peek() {
            self.chars.next();
            let rhs = self.factor()?;
            if op == '/' && rhs == 0.0 {
                return Err(CalcError::DivisionByZero);
            }
            value = if op == '*' { value * rhs } else { value / rhs };
        }
        Ok(value)
    }

    fn factor(&mut self) -> Result<f64, CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        let value = match self.peek().copied() {
            Some((_, sign @ ('+' | '-'))) => {
                self.chars.next();
                let value = self.factor()?;
                if sign == '-' { -value } else { value }
            }
            Some((at, '(')) => {
                self.chars.next();
                let value = self.expression()?;
                match self.peek() {
                    Some((_, ')')) => {
                        self.chars.next();
                        value
                    }
                    Some(&(at, c)) => return Err(CalcError::Unexpected(format!("`{c}`"), at)),
                    None => {
                        return Err(CalcError::Unexpected(
                            format!("end, `(` at {at} is not closed"),
                            at,
                        ));
                    }
                }
            }
            Some((at, c)) if c.is_ascii_digit() || c == '.' => self.number(at)?,
            Some((at, c)) => return Err(CalcError::Unexpected(format!("`{c}`"), at)),
            None => return Err(CalcError::Unexpected("end of expression".to_owned(), 0)),
        };
        self.depth -= 1;
        Ok(value)
    }

    fn number(&mut self, start: usize) -> Result<f64, CalcError> {
        let mut text = String::new();
        while let Some((_, c)) = self.chars.next_if(|(_, c)| c.is_ascii_digit() || *c == '.') {
            text.push(c);
        }
        text.parse()
            .map_err(|_| CalcError::Unexpected(format!("number `{text}`"), start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expression: &str) -> String {
        format_number(evaluate(expression).expect(expression))
    }

    #[test]
    fn follows_precedence_and_parentheses() {
        assert_eq!(eval("1 + 2 * 3"), "7");
        assert_eq!(eval("(1 + 2) * 3"), "9");
        assert_eq!(eval("10 - 4 - 3"), "3");
        assert_eq!(eval("8 / 4 / 2"), "1");
    }

    #[test]
    fn handles_decimals_and_signs() {
        assert_eq!(eval("0.1 + 0.2"), "0.3");
        assert_eq!(eval("-(2.5 * 4) + +1"), "-9");
        assert_eq!(eval("1200 * 0.035 / 12"), "3.5");
        assert_eq!(eval(".5 * 3"), "1.5");
    }

    #[test]
    fn refuses_what_is_not_arithmetic() {
        assert_eq!(evaluate("1 / (2 - 2)"), Err(CalcError::DivisionByZero));
        assert!(matches!(evaluate("2 ^ 3"), Err(CalcError::Unexpected(_, 2))));
        assert!(matches!(evaluate("(1 + 2"), Err(CalcError::Unexpected(..))));
        assert!(matches!(evaluate("1.2.3"), Err(CalcError::Unexpected(..))));
        assert!(matches!(evaluate(""), Err(CalcError::Unexpected(..))));
        assert!(matches!(evaluate("system('rm')"), Err(CalcError::Unexpected(..))));
        assert_eq!(evaluate(&"(".repeat(100)), Err(CalcError::TooDeep));
        assert_eq!(evaluate(&"1+".repeat(600)), Err(CalcError::TooLong));
    }
}
