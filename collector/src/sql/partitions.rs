//! PostgreSQL's activity, one partition per UTC day: `activity_dYYYYMMDD`
//! holds that day's events, so retention drops whole days (no row-by-row
//! delete, no bloat) and a timeline reads one or two partitions.
//!
//! Partitions are made ahead of time, from the retention's start to two
//! days ahead, at start and with every sweep. Events outside them (an
//! agent's clock far off, a spool from before the retention) land in
//! `activity_default`; a day's partition made later takes its rows from
//! there first, since PostgreSQL refuses a partition whose rows the
//! default partition holds.
use super::db::{Db, DbError};
use crate::vals;

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// Serializes partition changes between collectors.
const PARTITION_LOCK: i64 = 0x5649_4749_4c00_0002;

/// Days since the epoch of a time in ns (UTC).
pub fn day_of(ns: i64) -> i64 {
    ns.div_euclid(DAY_NS)
}

/// (year, month, day) of a day since the epoch (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since the epoch of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The partition of a day.
pub fn name(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("activity_d{y:04}{m:02}{d:02}")
}

/// The day a partition's name says, if it is a day partition.
pub fn day_of_name(name: &str) -> Option<i64> {
    let s = name.strip_prefix("activity_d")?;
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..].parse().ok()?,
    );
    let day = days_from_civil(y, m, d);
    (civil(day) == (y, m, d)).then_some(day)
}

/// The day partitions that exist, by day.
fn existing(db: &mut dyn Db) -> Result<Vec<i64>, DbError> {
    let names = db.map(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'activity'",
        &[],
        |r| r.get::<String>(0),
    )?;
    let mut days: Vec<i64> = names.iter().filter_map(|n| day_of_name(n)).collect();
    days.sort_unstable();
    Ok(days)
}

/// Makes the partitions of days `first..=last` that do not exist yet;
/// returns how many it made.
pub fn ensure(db: &mut dyn Db, first: i64, last: i64) -> Result<u32, DbError> {
    db.exec("SELECT pg_advisory_xact_lock(?1)", vals![PARTITION_LOCK])?;
    let have = existing(db)?;
    let mut made = 0;
    for day in first..=last {
        if have.binary_search(&day).is_ok() {
            continue;
        }
        let (t, from, to) = (name(day), day * DAY_NS, (day + 1) * DAY_NS);
        // Made detached, given the default partition's rows of its day,
        // then attached: the order PostgreSQL accepts.
        db.exec(
            &format!("CREATE TABLE {t} (LIKE activity INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
            &[],
        )?;
        db.exec(
            &format!(
                "WITH moved AS (DELETE FROM activity_default
                     WHERE time_unix_ns >= {from} AND time_unix_ns < {to} RETURNING *)
                 INSERT INTO {t} SELECT * FROM moved"
            ),
            &[],
        )?;
        db.exec(
            &format!(
                "ALTER TABLE activity ATTACH PARTITION {t} FOR VALUES FROM ({from}) TO ({to})"
            ),
            &[],
        )?;
        made += 1;
    }
    Ok(made)
}

/// Drops the day partitions wholly before `before_ns`; returns about how
/// many events went with them (the planner's count).
pub fn drop_before(db: &mut dyn Db, before_ns: i64) -> Result<u64, DbError> {
    db.exec("SELECT pg_advisory_xact_lock(?1)", vals![PARTITION_LOCK])?;
    let mut events = 0u64;
    for day in existing(db)? {
        if (day + 1) * DAY_NS > before_ns {
            break;
        }
        let t = name(day);
        let rows: Option<i64> = db.value(
            "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE relname = ?1",
            vals![t.as_str()],
        )?;
        db.exec(&format!("DROP TABLE {t}"), &[])?;
        events += rows.unwrap_or(0) as u64;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_name_their_partition_and_back() {
        assert_eq!(name(0), "activity_d19700101");
        // 2026-11-29T12:00:00Z
        let day = day_of(1_795_953_600 * 1_000_000_000);
        assert_eq!(name(day), "activity_d20261129");
        for d in [-1, 0, 59, 60, 11_016, 20_000, 20_420, 50_000] {
            assert_eq!(day_of_name(&name(d)), Some(d), "{}", name(d));
        }
        assert_eq!(day_of_name("activity_d20260230"), None);
        assert_eq!(day_of_name("activity_default"), None);
        assert_eq!(day_of(-1), -1);
    }
}
