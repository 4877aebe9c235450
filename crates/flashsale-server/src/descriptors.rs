//! The process's open-file limit, and how many client connections it leaves room for. Every
//! connection is a descriptor; a server that runs out of them cannot accept, open a file or reach
//! its database, so the connection cap is sized below the limit.

/// Descriptors kept back from client connections: the journals, SQLite's files, the database and
/// Redis connections, the runtime's own, and headroom for connections being closed.
pub const DESCRIPTORS_RESERVED: u64 = 256;

/// Raises the soft open-file limit to the hard one (the soft default, often 1,024, is a relic;
/// the hard limit is what the operator allowed) and returns the soft limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed by pointer, which lives through the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct passed by pointer, which lives through the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            "could not raise the open-file limit to the hard limit"
        );
    }
    Ok(limit.rlim_cur)
}

/// The most client connections a process with `open_files` descriptors can hold:
/// `DESCRIPTORS_RESERVED` fewer, or half of them when the limit is so small that the reserve
/// would leave less.
pub fn connections_for(open_files: u64) -> usize {
    let connections = open_files
        .saturating_sub(DESCRIPTORS_RESERVED)
        .max(open_files / 2)
        .max(1);
    usize::try_from(connections).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_or_half_the_descriptors() {
        assert_eq!(connections_for(1024), 768);
        assert_eq!(connections_for(1_048_576), 1_048_320);
        assert_eq!(connections_for(300), 150);
        assert_eq!(connections_for(0), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = raise_open_file_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(raised, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
