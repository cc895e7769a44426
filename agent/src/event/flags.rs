//! Flag bits by name. Each family keeps the table of names its flags can
//! take; decoding lists the names of the bits set, and reading a recording
//! back maps each name to the table's own `&'static str`, so events keep
//! borrowing static names and an unknown name is an error, not a leak.
use serde::{Deserialize, Deserializer};

/// A closed set of flag names.
pub trait FlagTable {
    /// Each bit with its name, in the order names are listed.
    const BITS: &'static [(u64, &'static str)];
    /// Names that are not one bit (an access mode, a bit combination).
    const OTHER_NAMES: &'static [&'static str] = &[];

    /// The table's own copy of `name`.
    fn lookup(name: &str) -> Option<&'static str> {
        Self::BITS
            .iter()
            .map(|(_, n)| *n)
            .chain(Self::OTHER_NAMES.iter().copied())
            .find(|n| *n == name)
    }
}

/// The names of the bits of `T` set in `flags`, in table order.
pub fn names_of<T: FlagTable>(flags: u64) -> Vec<&'static str> {
    T::BITS
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn to_static<T: FlagTable, E: serde::de::Error>(
    names: Vec<std::borrow::Cow<'_, str>>,
) -> Result<Vec<&'static str>, E> {
    names
        .iter()
        .map(|n| T::lookup(n).ok_or_else(|| E::custom(format!("unknown flag `{n}`"))))
        .collect()
}

/// `deserialize_with` for a list of `T`'s names.
pub fn de_names<'de, T: FlagTable, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<&'static str>, D::Error> {
    to_static::<T, _>(Vec::deserialize(d)?)
}

/// `deserialize_with` for an optional list of `T`'s names.
pub fn de_opt_names<'de, T: FlagTable, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<&'static str>>, D::Error> {
    Option::<Vec<_>>::deserialize(d)?
        .map(to_static::<T, _>)
        .transpose()
}
