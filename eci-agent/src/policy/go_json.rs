//! JSON with Go's `encoding/json` rules, replayed: keys match struct fields case-insensitively
//! with Go's folding, object members apply in order (the last duplicate wins, objects and arrays
//! decode *into* what an earlier duplicate left), `null` leaves a field alone, and a wrong type
//! is an error naming the field. The engine decodes request bodies this way, so the gate must
//! read them this way too ([`super::wire`] uses these decoders field by field).

use std::{collections::BTreeMap, fmt};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps object members in order, duplicates included, so that Go's
/// "decode each member into the matching field, in order" can be replayed.
#[derive(Clone, Debug, PartialEq)]
pub enum GoJson {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<GoJson>),
    Object(Vec<(String, GoJson)>),
}

impl<'de> Deserialize<'de> for GoJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GoJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<GoJson, E> {
                Ok(GoJson::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<GoJson, E> {
                Ok(GoJson::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<GoJson, E> {
                Ok(GoJson::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<GoJson, E> {
                Ok(GoJson::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<GoJson, E> {
                Ok(GoJson::Number(n.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<GoJson, E> {
                Ok(GoJson::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<GoJson, E> {
                Ok(GoJson::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GoJson, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(GoJson::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GoJson, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = map.next_entry::<String, GoJson>()? {
                    v.push((k, x));
                }
                Ok(GoJson::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a body could not be decoded the way the engine would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not one JSON value (the engine answers 400; the proxy refuses to guess).
    #[error("invalid JSON body: {0}")]
    Syntax(String),
    /// A field the gate needs has the wrong JSON type (the engine answers 400 too).
    #[error("field {0} has the wrong type")]
    Type(&'static str),
}

/// Go's `foldName`: ASCII folds to upper case, and the two non-ASCII runes whose fold set holds
/// an ASCII letter (KELVIN SIGN, LATIN SMALL LETTER LONG S) fold to it. Anything else cannot
/// match our ASCII field names, so it folds to `None`.
pub(super) fn go_fold(key: &str) -> Option<String> {
    key.chars()
        .map(|c| match c {
            'a'..='z' => Some(c.to_ascii_uppercase()),
            '\u{212A}' => Some('K'),
            '\u{017F}' => Some('S'),
            c if c.is_ascii() => Some(c),
            _ => None,
        })
        .collect()
}

/// A Go slice: elements between `len` and the capacity keep their old contents, and Go decodes
/// a JSON array *into* the existing elements (golang/go#21092). Replaying that matters: a
/// second `"mounts"` member can only overwrite fields of the first one's elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoSlice<T> {
    backing: Vec<T>,
    len: usize,
    /// Go tells a nil slice (absent, or `null`) from an empty one (`[]`); the engine does too
    /// (`MaskedPaths: []` unmasks everything, `null` keeps the defaults).
    non_nil: bool,
}

impl<T> GoSlice<T> {
    pub fn items(&self) -> &[T] {
        &self.backing[..self.len]
    }

    /// `false` for a nil slice: the field was absent or its last value was `null`.
    pub fn is_set(&self) -> bool {
        self.non_nil
    }
}

pub(super) type Res = Result<(), BodyError>;

pub(super) fn dec_string(dst: &mut String, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => Ok(()),
        GoJson::String(s) => {
            dst.clone_from(s);
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

pub(super) fn dec_bool(dst: &mut bool, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => Ok(()),
        GoJson::Bool(b) => {
            *dst = *b;
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// moby's `strslice.StrSlice` (`CapAdd`): its own `UnmarshalJSON` takes a string or an array
/// of strings and always *replaces* the value (`null` clears it), unlike a plain Go slice.
pub(super) fn dec_strslice(dst: &mut Vec<String>, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => dst.clear(),
        GoJson::String(s) => *dst = vec![s.clone()],
        GoJson::Array(items) => {
            *dst = items
                .iter()
                .map(|x| match x {
                    // `[]string` decoding leaves a null element as "".
                    GoJson::Null => Ok(String::new()),
                    GoJson::String(s) => Ok(s.clone()),
                    _ => Err(BodyError::Type(field)),
                })
                .collect::<Result<_, _>>()?;
        }
        _ => return Err(BodyError::Type(field)),
    }
    Ok(())
}

/// A slice of structs whose contents the gate does not read, only how many there are.
pub(super) fn dec_opaque_structs(dst: &mut GoSlice<()>, v: &GoJson, field: &'static str) -> Res {
    dec_slice(dst, v, field, |_, x| dec_struct(x, field, |_, _| Ok(())))
}

pub(super) fn dec_strings(dst: &mut GoSlice<String>, v: &GoJson, field: &'static str) -> Res {
    dec_slice(dst, v, field, |s, x| dec_string(s, x, field))
}

pub(super) fn dec_slice<T: Default>(
    dst: &mut GoSlice<T>,
    v: &GoJson,
    field: &'static str,
    mut elem: impl FnMut(&mut T, &GoJson) -> Res,
) -> Res {
    match v {
        GoJson::Null => {
            *dst = GoSlice {
                backing: Vec::new(),
                len: 0,
                non_nil: false,
            };
            Ok(())
        }
        GoJson::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i >= dst.backing.len() {
                    dst.backing.push(T::default());
                }
                elem(&mut dst.backing[i], item)?;
            }
            dst.len = items.len();
            dst.non_nil = true;
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// A struct: each member, in order, is decoded into the field its folded name selects.
pub(super) fn dec_struct(
    v: &GoJson,
    field: &'static str,
    mut member: impl FnMut(&str, &GoJson) -> Res,
) -> Res {
    match v {
        GoJson::Null => Ok(()),
        GoJson::Object(members) => {
            for (k, x) in members {
                if let Some(folded) = go_fold(k) {
                    member(&folded, x)?;
                }
            }
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// A pointer to a struct: `null` clears it, an object is merged into the existing value.
pub(super) fn dec_ptr<T: Default>(
    dst: &mut Option<T>,
    v: &GoJson,
    field: &'static str,
    f: impl FnOnce(&mut T, &GoJson) -> Res,
) -> Res {
    match v {
        GoJson::Null => {
            *dst = None;
            Ok(())
        }
        GoJson::Object(_) => f(dst.get_or_insert_with(T::default), v),
        _ => Err(BodyError::Type(field)),
    }
}

/// `map[string]string`: keys are exact (no folding); an existing map is added to.
pub(super) fn dec_map(
    dst: &mut Option<BTreeMap<String, String>>,
    v: &GoJson,
    field: &'static str,
) -> Res {
    match v {
        GoJson::Null => {
            *dst = None;
            Ok(())
        }
        GoJson::Object(members) => {
            let map = dst.get_or_insert_with(BTreeMap::new);
            for (k, x) in members {
                let mut s = String::new();
                dec_string(&mut s, x, field)?;
                map.insert(k.clone(), s);
            }
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}
