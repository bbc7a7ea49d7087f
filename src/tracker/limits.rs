//! How many connections this tracker can really serve, fitted at start to every limit that
//! bounds threads.
//!
//! Each connection is one OS thread. A thread that cannot be created is an error the accept
//! loop handles (the client is told to try later), but one that is created and then cannot set
//! itself up is not: Rust's runtime gives every new thread an alternate signal stack (for its
//! stack-overflow message) by `mmap` plus `mprotect` of a guard page *inside the new thread*,
//! and panics there if either fails, which aborts the whole process (`failed to set up
//! alternative stack guard page: Cannot allocate memory`, `fatal runtime error`). The first of
//! those to fail is the per-process limit on memory mappings, `vm.max_map_count` (65,530 by
//! default): a connection thread costs 4 mappings (its stack and guard page, the alternate stack
//! and its guard), so about 16,380 threads exhaust it. So `--max-connections` is lowered at
//! start, with margin, to fit:
//!
//! - open files (`RLIMIT_NOFILE`): one descriptor per connection, [`SPARE_DESCRIPTORS`] spare;
//! - `vm.max_map_count`: mappings per thread measured here, [`map_reserve`] kept for the rest;
//! - `kernel.threads-max` and `kernel.pid_max`: tasks on the whole machine, an eighth left over;
//! - `RLIMIT_NPROC`: tasks of this user (not enforced for root);
//! - the control group's `pids.max`, at every level up to the root;
//! - memory: address space (`RLIMIT_AS`), commit limit under strict overcommit, and resident
//!   memory (what is available, or the control group's limit), half of it for connections.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::console_out::thousands;

/// Descriptors kept for the listener, stdio, logs and the odd file, beside one per connection.
pub const SPARE_DESCRIPTORS: usize = 64;

/// Mappings one connection thread costs when it cannot be measured: stack and guard page,
/// alternate signal stack and guard page.
pub const MAPS_PER_THREAD: usize = 4;

/// Resident memory one idle connection costs, kernel included (thread stack pages touched,
/// kernel stack and task, socket, read buffer), rounded up from a measurement.
pub const RESIDENT_PER_CONNECTION: u64 = 48 * 1024;

/// Tasks kept for this process's other threads, beside one per connection.
const SPARE_TASKS: usize = 64;

/// One limit on connections, as measured at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// What the limit is called (`vm.max_map_count`, `open files`, ...).
    pub name: &'static str,
    /// How many connections it leaves room for.
    pub room: usize,
    /// The figures behind `room`, for the start line and `RUST_LOG=debug`.
    pub detail: String,
}

/// The connection limit after fitting.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// `--max-connections` as given.
    pub asked: usize,
    /// What the tracker will serve at once.
    pub cap: usize,
    /// Every limit measured.
    pub limits: Vec<Limit>,
}

impl Fitted {
    /// Fits `asked` to `limits`: the cap is the smallest room, never below 1.
    pub fn new(asked: usize, limits: Vec<Limit>) -> Fitted {
        let cap = limits.iter().map(|l| l.room).fold(asked, usize::min).max(1);
        Fitted { asked, cap, limits }
    }

    /// The limit that set the cap, or `None` when `--max-connections` did.
    pub fn binding(&self) -> Option<&Limit> {
        if self.cap >= self.asked {
            return None;
        }
        self.limits.iter().min_by_key(|l| l.room)
    }

    /// The start line: how many connections, and which limit set that.
    pub fn summary(&self) -> String {
        match self.binding() {
            None => format!(
                "Até {} conexões ao mesmo tempo (limite: --max-connections)",
                thousands(self.cap as u64)
            ),
            Some(limit) => format!(
                "Até {} conexões ao mesmo tempo (limite: {}, {}; --max-connections pedia {})",
                thousands(self.cap as u64),
                limit.name,
                limit.detail,
                thousands(self.asked as u64)
            ),
        }
    }
}

/// Measures every limit for connection threads of `stack` bytes, with `buffered` bytes of
/// message buffers on top. `open_files` is the soft open-file limit in force.
pub fn measure(open_files: Option<u64>, stack: usize, buffered: usize) -> Vec<Limit> {
    let mut limits = Vec::new();
    limits.extend(open_files.map(open_file_limit));
    limits.extend(map_count_limit(stack));
    limits.extend(task_limits());
    limits.extend(nproc_limit());
    limits.extend(cgroup_pids_limit());
    limits.extend(memory_limits(stack, buffered));
    limits
}

/// Room under the open-file limit: one descriptor per connection plus the spare ones.
pub fn open_file_limit(soft: u64) -> Limit {
    let room = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(SPARE_DESCRIPTORS);
    Limit {
        name: "arquivos abertos (ulimit -n)",
        room,
        detail: format!("{} descritores", thousands(soft)),
    }
}

/// Mappings kept for everything but connection threads (libraries, allocator arenas, large
/// buffers, the table's vectors), out of `max_map_count`.
pub fn map_reserve(max_map_count: usize) -> usize {
    2048 + max_map_count / 20
}

/// Room under `vm.max_map_count`.
pub fn map_count_room(max_map_count: usize, maps_now: usize, per_thread: usize) -> usize {
    max_map_count
        .saturating_sub(maps_now)
        .saturating_sub(map_reserve(max_map_count))
        / per_thread.max(1)
}

fn map_count_limit(stack: usize) -> Option<Limit> {
    let max: usize = read_number("/proc/sys/vm/max_map_count")?;
    // Measuring starts 64 threads: only where they surely fit, or it could itself abort.
    let per_thread = if max.saturating_sub(count_maps()?) > map_reserve(max) + 64 * 8 {
        maps_per_thread(stack).unwrap_or(MAPS_PER_THREAD)
    } else {
        MAPS_PER_THREAD
    };
    let now = count_maps()?;
    Some(Limit {
        name: "vm.max_map_count",
        room: map_count_room(max, now, per_thread),
        detail: format!(
            "{} mapeamentos, {} em uso, {per_thread} por conexão",
            thousands(max as u64),
            thousands(now as u64)
        ),
    })
}

/// Mappings in this process now.
pub fn count_maps() -> Option<usize> {
    let maps = fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|&&b| b == b'\n').count())
}

/// Mappings one thread of `stack` bytes costs, measured: the difference between 16 and 64
/// started threads (so one-off costs such as allocator arenas are left out), rounded up.
pub fn maps_per_thread(stack: usize) -> Option<usize> {
    const FIRST: usize = 16;
    const MORE: usize = 48;
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let mut threads = Vec::new();
    let mut counts = Vec::new();
    for batch in [FIRST, MORE] {
        for _ in 0..batch {
            let (started, release) = (started_tx.clone(), release_rx.clone());
            // A thread has set up its alternate signal stack before it runs our closure.
            let spawned = thread::Builder::new()
                .name("measure".into())
                .stack_size(stack)
                .spawn(move || {
                    let _ = started.send(());
                    let _ = release.recv();
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => break,
            }
        }
        if threads.len() < counts.len() * FIRST + batch {
            break;
        }
        for _ in 0..batch {
            let _ = started_rx.recv();
        }
        counts.push(count_maps());
    }
    // Closing the channel lets every measuring thread end.
    drop(release_tx);
    for t in threads {
        let _ = t.join();
    }
    match counts.as_slice() {
        [Some(first), Some(all)] => Some(all.saturating_sub(*first).div_ceil(MORE).max(1)),
        _ => None,
    }
}

fn task_limits() -> Vec<Limit> {
    let Some(tasks) = tasks_on_machine() else {
        return Vec::new();
    };
    let mut limits = Vec::new();
    for (name, path) in [
        ("kernel.threads-max", "/proc/sys/kernel/threads-max"),
        ("kernel.pid_max", "/proc/sys/kernel/pid_max"),
    ] {
        if let Some(max) = read_number::<usize>(path) {
            limits.push(Limit {
                name,
                room: task_room(max, tasks),
                detail: format!(
                    "{} tarefas, {} em uso na máquina",
                    thousands(max as u64),
                    thousands(tasks as u64)
                ),
            });
        }
    }
    limits
}

/// Room for threads under a machine-wide task limit `max` with `tasks` running: an eighth of
/// the machine (at least 1,024 tasks) is left to everything else.
pub fn task_room(max: usize, tasks: usize) -> usize {
    let spare = (max / 8).max(1024);
    max.saturating_sub(tasks)
        .saturating_sub(spare)
        .saturating_sub(SPARE_TASKS)
}

/// Tasks (threads) on the machine: the fourth field of `/proc/loadavg` is `running/total`.
fn tasks_on_machine() -> Option<usize> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

fn nproc_limit() -> Option<Limit> {
    // `None`: unlimited.
    let soft = getrlimit(Resource::Nproc).current?;
    if rustix::process::geteuid().is_root() {
        // Root holds CAP_SYS_RESOURCE, which the kernel lets past RLIMIT_NPROC.
        return None;
    }
    let max = usize::try_from(soft).unwrap_or(usize::MAX);
    let tasks = tasks_of_user(rustix::process::getuid().as_raw())?;
    Some(Limit {
        name: "processos do usuário (ulimit -u)",
        room: max.saturating_sub(tasks).saturating_sub(SPARE_TASKS),
        detail: format!(
            "{} tarefas, {} deste usuário em uso",
            thousands(max as u64),
            thousands(tasks as u64)
        ),
    })
}

/// Threads of every process whose real user is `uid` (what RLIMIT_NPROC counts).
fn tasks_of_user(uid: libc::uid_t) -> Option<usize> {
    let mut total = 0;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
        };
        if field("Uid:") == Some(uid as usize) {
            total += field("Threads:").unwrap_or(1);
        }
    }
    Some(total)
}

fn cgroup_pids_limit() -> Option<Limit> {
    let membership = fs::read_to_string("/proc/self/cgroup").ok()?;
    let dir = cgroup_dir(&membership, "pids")?;
    let mut best: Option<(usize, usize, usize)> = None;
    for level in dir.ancestors() {
        if !level.starts_with("/sys/fs/cgroup") {
            break;
        }
        let (Some(max), Some(current)) = (
            read_number::<usize>(level.join("pids.max")),
            read_number::<usize>(level.join("pids.current")),
        ) else {
            continue;
        };
        let room = max.saturating_sub(current).saturating_sub(SPARE_TASKS);
        if best.is_none_or(|(r, _, _)| room < r) {
            best = Some((room, max, current));
        }
    }
    let (room, max, current) = best?;
    Some(Limit {
        name: "pids.max do cgroup",
        room,
        detail: format!(
            "{} tarefas, {} em uso",
            thousands(max as u64),
            thousands(current as u64)
        ),
    })
}

/// The folder of this process's control group for `controller`, from `/proc/self/cgroup`:
/// the v1 hierarchy that names it, else the unified (v2) one.
pub fn cgroup_dir(membership: &str, controller: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == controller) {
            return Some(Path::new("/sys/fs/cgroup").join(controller).join(path));
        }
        if controllers.is_empty() {
            unified = Some(Path::new("/sys/fs/cgroup").join(path));
        }
    }
    unified
}

fn memory_limits(stack: usize, buffered: usize) -> Vec<Limit> {
    let page = page_size();
    // Stack and guard, alternate signal stack and guard: what one thread reserves.
    let per_thread = (stack.div_ceil(page) + 2) * page + sigstack_size() + page;
    let per_thread = per_thread as u64;
    // Room for message buffers and some growth of everything else.
    let keep = buffered as u64 + (64 << 20);
    let mut limits = Vec::new();
    // `None`: unlimited.
    if let Some(address_space) = getrlimit(Resource::As).current {
        let used = status_kib("VmSize:").unwrap_or(0) * 1024;
        let free = address_space.saturating_sub(used).saturating_sub(keep);
        limits.push(Limit {
            name: "espaço de endereços (ulimit -v)",
            room: usize::try_from(free / per_thread).unwrap_or(usize::MAX),
            detail: format!(
                "{} MiB, {} KiB por conexão",
                thousands(address_space >> 20),
                per_thread / 1024
            ),
        });
    }
    if read_number::<u32>("/proc/sys/vm/overcommit_memory") == Some(2)
        && let (Some(limit), Some(committed)) =
            (meminfo_kib("CommitLimit:"), meminfo_kib("Committed_AS:"))
    {
        let free = (limit.saturating_sub(committed) * 1024).saturating_sub(keep);
        limits.push(Limit {
            name: "memória reservável (vm.overcommit_memory = 2)",
            room: usize::try_from(free / per_thread).unwrap_or(usize::MAX),
            detail: format!(
                "{} MiB livres, {} KiB por conexão",
                thousands(limit.saturating_sub(committed) >> 10),
                per_thread / 1024
            ),
        });
    }
    if let Some(available) = available_memory() {
        limits.push(Limit {
            name: "memória disponível",
            room: usize::try_from(available / 2 / RESIDENT_PER_CONNECTION).unwrap_or(usize::MAX),
            detail: format!(
                "{} MiB, metade para conexões de {} KiB",
                thousands(available >> 20),
                RESIDENT_PER_CONNECTION / 1024
            ),
        });
    }
    limits
}

/// Memory this process could still get: the machine's available memory, or less if its
/// control group is limited.
fn available_memory() -> Option<u64> {
    let machine = meminfo_kib("MemAvailable:")? * 1024;
    let group = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|m| cgroup_dir(&m, "memory"))
        .and_then(|dir| {
            let (max, current) = if dir.join("memory.max").exists() {
                (dir.join("memory.max"), dir.join("memory.current"))
            } else {
                (
                    dir.join("memory.limit_in_bytes"),
                    dir.join("memory.usage_in_bytes"),
                )
            };
            Some(read_number::<u64>(max)?.saturating_sub(read_number::<u64>(current)?))
        });
    Some(group.map_or(machine, |g| g.min(machine)))
}

fn sigstack_size() -> usize {
    // The kernel's AT_MINSIGSTKSZ (0 when it gives none); libc's constant at least.
    libc::SIGSTKSZ.max(rustix::param::linux_minsigstksz())
}

fn page_size() -> usize {
    rustix::param::page_size().max(4096)
}

fn read_number<T: std::str::FromStr>(path: impl AsRef<Path>) -> Option<T> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn meminfo_kib(key: &str) -> Option<u64> {
    kib_field(&fs::read_to_string("/proc/meminfo").ok()?, key)
}

fn status_kib(key: &str) -> Option<u64> {
    kib_field(&fs::read_to_string("/proc/self/status").ok()?, key)
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises the soft open-file limit to the hard one, so that thousands of peers fit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (
        unlimited_as_max(limit.current),
        unlimited_as_max(limit.maximum),
    );
    if soft < hard {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// The open-file limit in force: raised to the hard limit if possible; if raising fails, the
/// soft limit as it is (a failed raise must still leave the connection cap fitted).
pub fn open_file_limit_in_force() -> Option<u64> {
    limit_in_force(raise_open_file_limit(), || {
        Some(unlimited_as_max(getrlimit(Resource::Nofile).current))
    })
}

/// The limit after an attempt to raise it: the raised one, or else what `current` reads.
fn limit_in_force(raised: io::Result<u64>, current: impl FnOnce() -> Option<u64>) -> Option<u64> {
    match raised {
        Ok(limit) => Some(limit),
        Err(e) => {
            log::warn!("cannot raise the open-file limit: {e}");
            current()
        }
    }
}

/// A limit as the kernel's `RLIM_INFINITY` spells "unlimited": the largest value.
fn unlimited_as_max(limit: Option<u64>) -> u64 {
    limit.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &'static str, room: usize) -> Limit {
        Limit {
            name,
            room,
            detail: String::new(),
        }
    }

    /// The cap is the smallest room; the start line names that limit, or --max-connections
    /// when nothing was lower.
    #[test]
    fn the_smallest_room_sets_the_cap_and_is_named() {
        let fitted = Fitted::new(16_384, vec![limit("a", 20_000), limit("b", 15_004)]);
        assert_eq!(fitted.cap, 15_004);
        assert_eq!(fitted.binding().map(|l| l.name), Some("b"));
        assert!(
            fitted
                .summary()
                .starts_with("Até 15.004 conexões ao mesmo tempo (limite: b,")
        );
        let fitted = Fitted::new(100, vec![limit("a", 20_000)]);
        assert_eq!(fitted.cap, 100);
        assert!(fitted.binding().is_none());
        assert!(fitted.summary().ends_with("(limite: --max-connections)"));
        assert_eq!(Fitted::new(100, vec![limit("none", 0)]).cap, 1);
    }

    /// At the default vm.max_map_count, 4 mappings a thread leave room well below the 16,380
    /// threads at which the runtime used to abort, with thousands of mappings to spare.
    #[test]
    fn the_mapping_room_keeps_a_margin_below_the_abort() {
        let room = map_count_room(65_530, 200, 4);
        assert!(room < 16_380 - 1000, "{room}");
        assert!(room > 14_000, "{room}");
        assert!(65_530 - 200 - room * 4 >= 5000);
        assert_eq!(map_count_room(1000, 5000, 4), 0);
    }

    /// A thread of ours costs the mappings counted in the module documentation (stack and
    /// guard, alternate signal stack and guard), give or take a merge with a neighbour.
    #[test]
    fn a_thread_costs_about_four_mappings() {
        let measured = maps_per_thread(128 * 1024).expect("measurable on Linux");
        assert!((3..=6).contains(&measured), "{measured}");
    }

    #[test]
    fn open_files_and_tasks_leave_their_spares() {
        assert_eq!(open_file_limit(80).room, 16);
        assert_eq!(open_file_limit(10).room, 0);
        assert_eq!(task_room(32_768, 200), 32_768 - 200 - 4096 - 64);
        assert_eq!(task_room(4000, 3000), 0);
    }

    /// A failed raise of the open-file limit still leaves a limit to fit to: the one in force.
    #[test]
    fn a_failed_raise_still_fits_to_the_limit_in_force() {
        let failed = Err(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(limit_in_force(failed, || Some(80)), Some(80));
        assert_eq!(limit_in_force(Ok(4096), || Some(80)), Some(4096));
    }

    #[test]
    fn the_cgroup_folder_comes_from_v1_or_the_unified_hierarchy() {
        let v1 = "8:pids:/user.slice/u.scope\n4:memory:/m\n0::/unified";
        assert_eq!(
            cgroup_dir(v1, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/user.slice/u.scope"))
        );
        assert_eq!(
            cgroup_dir(v1, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/m"))
        );
        assert_eq!(
            cgroup_dir("0::/system.slice/x.service", "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/x.service"))
        );
        assert_eq!(cgroup_dir("", "pids"), None);
    }
}
