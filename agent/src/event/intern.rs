//! Reading recorded events back (`rules test`): the decoder names things
//! with `&'static str`, so a replay interns each distinct name once.
use std::{collections::HashSet, sync::Mutex};

use serde::{Deserialize, Deserializer};

/// `&'static str` under another name: serde's derive would otherwise
/// borrow such fields from the input, which a replay cannot give.
pub type Name = &'static str;

static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// The interned copy of `s`. Each distinct string is leaked once; names in
/// events (ops, flags, runtimes) are a small closed set.
pub fn intern(s: &str) -> &'static str {
    let mut g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let set = g.get_or_insert_with(HashSet::new);
    if let Some(&k) = set.get(s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(k);
    k
}

pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    Ok(intern(&String::deserialize(d)?))
}

pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<&'static str>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| intern(s))
        .collect())
}

pub fn opt_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<&'static str>>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.map(|v| v.iter().map(|s| intern(s)).collect()))
}
