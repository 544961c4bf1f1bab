//! What the routes share: reading query parameters and JSON object bodies strictly, and
//! keyset pages.

use fraudsense_actors::transaction::FieldError;
use serde_json::{Map, Value};

/// A validation error for `field`.
pub fn field_error(field: &str, reason: &str) -> FieldError {
    FieldError { field: field.to_owned(), reason: reason.to_owned() }
}

/// The parameters of `query` named in `known`, each once, in order of appearance. Unknown
/// parameters are ignored; a known one given twice is reported once in `errors`.
pub fn known_pairs(
    query: Option<&str>,
    known: &[&str],
    errors: &mut Vec<FieldError>,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (key, value) in query.map(|q| url::form_urlencoded::parse(q.as_bytes())).into_iter().flatten() {
        if !known.contains(&key.as_ref()) {
            continue;
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            if !errors.iter().any(|e| e.field == key) {
                errors.push(field_error(&key, "must be given at most once"));
            }
            continue;
        }
        pairs.push((key.into_owned(), value.into_owned()));
    }
    pairs
}

/// A body's fields and the errors found so far.
pub type Fields<'a> = (&'a Map<String, Value>, Vec<FieldError>);

/// `body`'s fields, with an "unknown field" error for each one not in `known`; an error
/// naming `body` if it is not a JSON object.
pub fn object_fields<'a>(body: &'a Value, known: &[&str]) -> Result<Fields<'a>, Vec<FieldError>> {
    let Some(fields) = body.as_object() else {
        return Err(vec![field_error("body", "must be a JSON object")]);
    };
    let unknown = fields
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| field_error(k, "unknown field"))
        .collect();
    Ok((fields, unknown))
}

/// One page out of `items`, fetched with one more than `limit` to tell whether another
/// follows: the first `limit`, and the id to pass as `cursor` for the next page.
pub fn page<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<i64>) {
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(id);
        (items, next)
    } else {
        (items, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_parameters_are_read_once_and_repeats_reported_once() {
        let mut errors = Vec::new();
        let pairs = known_pairs(Some("a=1&x=9&b=2&a=3&a=4"), &["a", "b"], &mut errors);
        assert_eq!(pairs, [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]);
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_page_names_its_successor_only_when_there_is_one() {
        assert_eq!(page(vec![9, 8, 7], 2, |n| *n), (vec![9, 8], Some(8)));
        assert_eq!(page(vec![9, 8], 2, |n| *n), (vec![9, 8], None));
    }
}
