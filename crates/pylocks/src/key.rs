//! The lock key format, shared with every other client (see `testdata/key-vectors.json`).
//!
//! Components are joined with `:`: the root prefix (when there is one), the prefix, then exactly
//! `arity` parts. Inside each component `\` is written `\\` and `:` is written `\:`, so two
//! different part tuples never produce the same key.

use std::fmt::{Display, Write};

use crate::Error;

/// Appends `component` to `key`, escaping `\` and `:`.
fn push_escaped(key: &mut String, component: &str) {
    for c in component.chars() {
        if c == '\\' || c == ':' {
            key.push('\\');
        }
        key.push(c);
    }
}

/// Builds the key for `parts` under `root_prefix` and `prefix`.
///
/// # Errors
///
/// [`Error::Arity`] when the number of parts is not `arity`.
pub(crate) fn build<I>(
    root_prefix: Option<&str>,
    prefix: &str,
    arity: usize,
    parts: I,
) -> Result<String, Error>
where
    I: IntoIterator,
    I::Item: Display,
{
    let mut key = String::new();
    if let Some(root) = root_prefix {
        push_escaped(&mut key, root);
        key.push(':');
    }
    push_escaped(&mut key, prefix);
    let mut got = 0;
    let mut part = String::new();
    for p in parts {
        got += 1;
        if got > arity {
            // Keep counting so the error says how many were given.
            continue;
        }
        part.clear();
        // Writing into a String cannot fail.
        let _ = write!(part, "{p}");
        key.push(':');
        push_escaped(&mut key, &part);
    }
    if got != arity {
        return Err(Error::Arity {
            expected: arity,
            got,
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_may_be_any_display() {
        assert_eq!(
            build(Some("locks"), "person", 1, [42]).ok().as_deref(),
            Some("locks:person:42")
        );
        assert_eq!(
            build(None, "p", 2, ["a:b", "c"]).ok().as_deref(),
            Some(r"p:a\:b:c")
        );
    }

    #[test]
    fn wrong_arity_counts_every_part() {
        assert!(matches!(
            build(None, "p", 1, ["a", "b", "c"]),
            Err(Error::Arity {
                expected: 1,
                got: 3
            })
        ));
        assert!(matches!(
            build(None, "p", 2, Vec::<String>::new()),
            Err(Error::Arity {
                expected: 2,
                got: 0
            })
        ));
    }
}
