//! The brake on guessing the admin token: failed authentications that could have been a guess
//! (a bearer that is neither the admin token nor a token we signed) are counted per client
//! address and minute; past `admin_auth_failures_per_min`, every admin authentication from that
//! address, right or wrong, is answered `429` until the minute ends, so a guesser learns nothing
//! from the answers. Buyers' tokens (a valid signature) are never counted nor braked, and other
//! addresses are untouched. The compare is constant-time and the token long: this is defence in
//! depth.
//!
//! Addresses are hashed into a fixed table of slots, each packing (minute, failures) into one
//! atomic: bounded memory whatever the number of addresses, no lock. An IPv6 client counts by its
//! /64 (one host usually holds the whole /64). Two addresses sharing a slot share a budget, which
//! only makes the brake stricter for them.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of the table (a power of two).
const SLOTS: usize = 1 << 12;
const SECONDS_PER_MINUTE: i64 = 60;

pub struct AdminFailures {
    failures_per_min: u32,
    slots: Box<[AtomicU64]>,
    /// Seeded per process, so nobody can aim addresses at one slot from outside.
    hasher: foldhash::fast::RandomState,
}

impl AdminFailures {
    /// `failures_per_min` of 0 turns the brake off.
    pub fn new(failures_per_min: u32) -> Self {
        let slots = if failures_per_min == 0 { 0 } else { SLOTS };
        Self {
            failures_per_min,
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn slot(&self, client: IpAddr) -> Option<&AtomicU64> {
        if self.slots.is_empty() {
            return None;
        }
        let key: u128 = match client {
            IpAddr::V4(address) => u128::from(u32::from(address)),
            IpAddr::V6(address) => match address.to_ipv4_mapped() {
                Some(address) => u128::from(u32::from(address)),
                None => (u128::from(address) >> 64) | (1 << 127),
            },
        };
        let hash = self.hasher.hash_one(key);
        Some(&self.slots[(hash as usize) & (SLOTS - 1)])
    }

    /// Seconds until the address may authenticate as the admin again, if it is braked now.
    pub fn braked(&self, client: Option<IpAddr>, now_secs: i64) -> Option<u64> {
        let slot = self.slot(client?)?;
        let (minute, failures) = unpack(slot.load(Ordering::Acquire));
        (minute == minute_of(now_secs) && failures >= self.failures_per_min)
            .then(|| seconds_left(now_secs))
    }

    /// Counts a failure of the address; returns the seconds to wait if this failure is past
    /// the limit.
    pub fn record_failure(&self, client: Option<IpAddr>, now_secs: i64) -> Option<u64> {
        let slot = self.slot(client?)?;
        let minute = minute_of(now_secs);
        let packed = slot
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let (seen, failures) = unpack(packed);
                Some(if seen == minute {
                    pack(minute, failures.saturating_add(1))
                } else {
                    pack(minute, 1)
                })
            })
            .unwrap_or_else(|packed| packed);
        let (seen, failures) = unpack(packed);
        let failures = if seen == minute { failures + 1 } else { 1 };
        (failures > self.failures_per_min).then(|| seconds_left(now_secs))
    }
}

fn minute_of(now_secs: i64) -> u32 {
    (now_secs.div_euclid(SECONDS_PER_MINUTE) as u64 & 0xffff_ffff) as u32
}

fn seconds_left(now_secs: i64) -> u64 {
    (SECONDS_PER_MINUTE - now_secs.rem_euclid(SECONDS_PER_MINUTE)) as u64
}

fn pack(minute: u32, failures: u32) -> u64 {
    (u64::from(minute) << 32) | u64::from(failures)
}

fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_010;

    fn address(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn past_the_limit_an_address_is_braked_until_the_minute_ends() {
        let failures = AdminFailures::new(3);
        let guesser = address("203.0.113.7");
        for _ in 0..3 {
            assert_eq!(failures.record_failure(guesser, NOW), None);
        }
        assert_eq!(failures.braked(guesser, NOW), Some(50));
        assert_eq!(failures.record_failure(guesser, NOW + 1), Some(49));
        assert_eq!(failures.braked(guesser, NOW + 50), None, "a new minute");
        assert_eq!(failures.record_failure(guesser, NOW + 50), None);
    }

    #[test]
    fn other_addresses_keep_their_own_budget() {
        let failures = AdminFailures::new(2);
        for _ in 0..5 {
            failures.record_failure(address("203.0.113.7"), NOW);
        }
        let braked = (0..200)
            .map(|host| address(&format!("198.51.100.{host}")))
            .filter(|other| failures.braked(*other, NOW).is_some())
            .count();
        // Only an address sharing the guesser's slot (1 in 4096) would be braked.
        assert!(braked <= 1, "{braked} of 200 other addresses braked");
    }

    #[test]
    fn an_ipv6_host_counts_by_its_slash_64() {
        let failures = AdminFailures::new(1);
        failures.record_failure(address("2001:db8:1:2::1"), NOW);
        assert!(failures
            .record_failure(address("2001:db8:1:2:ffff::9"), NOW)
            .is_some());
    }

    #[test]
    fn zero_turns_the_brake_off_and_unknown_addresses_are_not_counted() {
        let off = AdminFailures::new(0);
        assert!((0..100).all(|_| off.record_failure(address("203.0.113.7"), NOW).is_none()));
        let on = AdminFailures::new(1);
        assert!((0..100).all(|_| on.record_failure(None, NOW).is_none()));
    }
}
