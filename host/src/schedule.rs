//! Shares the host's cores between tenants. Every handler call of every plugin runs
//! on one of `workers` core slots (the number of cores by default); when more calls
//! are ready than there are slots, the next slot goes by **weighted fair queuing**:
//! to the waiting tenant that has used the least slot time for its weight, then,
//! within that tenant, to its plugin that has used the least, then first come first
//! served. Work-conserving: a slot never stays free while a call waits, so an idle
//! tenant's share goes to the others. A plugin's `instances` stays its own cap on
//! calls at once (its worker threads); the slots cap the host.
//!
//! Long calls do not hold a core for their whole length: a running handler is
//! offered every epoch tick (10 ms by default) to give its slot up ([`Slot::rotate`]
//! from the sandbox's epoch callback); it does when another call is waiting and
//! goes back in line with its time charged. A model engine call cannot be
//! interrupted, so it is the longest a waiting tenant can be held back.
//!
//! Virtual time (start-time fair queuing): a tenant's clock advances by the slot
//! time it used divided by its weight; a tenant that was idle restarts at the clock
//! of the last grant, so idleness earns no credit to spend later.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The host-wide core slots and the queue of calls waiting for one.
pub struct Scheduler {
    slots: usize,
    state: Mutex<State>,
    /// Makes every running call offer its slot now instead of at its next tick
    /// (the host advances the engine's epoch).
    kick: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct State {
    free: usize,
    next_id: u64,
    /// Grants made so far.
    grants: u64,
    /// The start clock of the last grant.
    now: f64,
    tenants: HashMap<Arc<str>, Tenant>,
    weights: HashMap<String, u32>,
    waiting: Vec<Waiter>,
    granted: HashSet<u64>,
    /// The calls holding a slot now, by the id they were granted it under.
    holders: HashMap<u64, Holder>,
}

/// A call holding a slot.
struct Holder {
    tenant: Arc<str>,
    plugin: Arc<str>,
    /// Since when the time held is not yet charged.
    since: Instant,
}

#[derive(Default)]
struct Tenant {
    /// Slot seconds used, divided by the weight.
    clock: f64,
    /// Slots held now.
    running: usize,
    /// Calls waiting.
    waiting: usize,
    /// Per plugin of the tenant.
    plugins: HashMap<Arc<str>, PluginShare>,
    /// When the tenant was last granted a slot (a count of grants): of two equal
    /// clocks, the one served longer ago goes first.
    granted_at: u64,
    /// Slot time used in all, for [`Scheduler::usage`].
    used: Duration,
}

/// One plugin's part of its tenant's slots.
#[derive(Clone, Copy, Default)]
struct PluginShare {
    /// Slot seconds used.
    used: f64,
    /// Calls running or waiting.
    active: usize,
    /// When it was last granted a slot (a count of grants).
    granted_at: u64,
}

struct Waiter {
    id: u64,
    tenant: Arc<str>,
    plugin: Arc<str>,
    /// Woken (unparked) when granted: only the granted thread wakes, not every
    /// waiter — on a busy host the woken waiters would take CPU from the calls
    /// running.
    thread: Thread,
}

/// A core slot held by one call; given back when dropped.
pub struct Slot {
    scheduler: Arc<Scheduler>,
    /// The id it holds the slot under (a new one after each wait in line).
    id: u64,
    tenant: Arc<str>,
    plugin: Arc<str>,
    /// Time spent waiting for the slot, first grant and rotations.
    waited: Duration,
    /// False while the call is paused ([`Slot::pause`]): it holds no slot then.
    held: bool,
}

/// What a tenant used of the slots.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TenantUsage {
    /// Slot time used.
    pub used: Duration,
    /// Slots held now.
    pub running: usize,
    /// Calls waiting for a slot now.
    pub waiting: usize,
}

impl Scheduler {
    /// A scheduler of `slots` core slots (at least one); `kick` makes running calls
    /// offer their slots at once (see [`Slot::rotate`]).
    pub fn new(slots: usize, kick: impl Fn() + Send + Sync + 'static) -> Arc<Scheduler> {
        let slots = slots.max(1);
        Arc::new(Scheduler {
            slots,
            state: Mutex::new(State {
                free: slots,
                ..State::default()
            }),
            kick: Box::new(kick),
        })
    }

    /// How many calls may run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Sets a tenant's weight (the operator's `--tenants` file; default 1).
    pub fn set_weight(&self, tenant: &str, weight: u32) {
        self.lock()
            .weights
            .insert(tenant.to_string(), weight.max(1));
    }

    /// A tenant's weight: 1 unless the operator set another.
    pub fn weight(&self, tenant: &str) -> u32 {
        self.lock().weights.get(tenant).copied().unwrap_or(1)
    }

    /// What each tenant seen so far used.
    pub fn usage(&self) -> Vec<(String, TenantUsage)> {
        let state = self.lock();
        let mut all: Vec<(String, TenantUsage)> = state
            .tenants
            .iter()
            .map(|(name, t)| {
                let usage = TenantUsage {
                    used: t.used,
                    running: t.running,
                    waiting: t.waiting,
                };
                (name.to_string(), usage)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Waits (blocking the calling thread) for a slot for a call of `plugin`, of
    /// `tenant`.
    pub fn acquire(self: &Arc<Self>, tenant: &str, plugin: &str) -> Slot {
        let asked = Instant::now();
        let (tenant, plugin, id) = {
            let mut state = self.lock();
            let tenant = state.intern(tenant);
            let plugin: Arc<str> = Arc::from(plugin);
            let (state, id) = self.wait_in_line(state, &tenant, &plugin);
            drop(state);
            (tenant, plugin, id)
        };
        Slot {
            scheduler: self.clone(),
            id,
            tenant,
            plugin,
            waited: asked.elapsed(),
            held: true,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the line, hands out what is free, and waits until this call is
    /// granted; returns the id it holds its slot under.
    fn wait_in_line<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        tenant: &Arc<str>,
        plugin: &Arc<str>,
    ) -> (MutexGuard<'a, State>, u64) {
        let id = state.next_id;
        state.next_id += 1;
        state.join(tenant, plugin);
        state.waiting.push(Waiter {
            id,
            tenant: tenant.clone(),
            plugin: plugin.clone(),
            thread: std::thread::current(),
        });
        state.grant();
        // A call that comes before one running now (its tenant is behind on its
        // share) should not wait for a tick: the running calls look now. Compared
        // on clocks charged up to now: charged only at ticks, a running tenant's
        // clock could look up to a tick behind and the call wait for that tick.
        if !state.granted.contains(&id) {
            state.charge_holders();
            if state.overtakes(tenant, plugin) {
                (self.kick)();
            }
        }
        while !state.granted.remove(&id) {
            drop(state);
            // `unpark` before `park` is not lost; a spurious wake-up loops.
            std::thread::park();
            state = self.lock();
        }
        (state, id)
    }
}

/// The OS priority of the threads that run handlers, against the host's own threads
/// (the async runtime reading requests, forming batches, writing answers). The core
/// slots keep handlers to one call per core, but those threads, the worker a new call
/// wakes, and on a shared machine the clients share the same cores: at one priority
/// the OS lets a running handler finish its time slice (milliseconds) before they get
/// a core, so a light tenant's request can wait behind a heavy tenant's computation
/// before it can even ask for a slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HandlerPriority {
    /// The host's own priority.
    #[default]
    Normal,
    /// A nice value, 1-19.
    Nice(u8),
    /// Linux `SCHED_IDLE`: a handler runs only when no other thread of its group
    /// (its cgroup, or session under autogroup) is ready, and gives way at once
    /// when one wakes. Other groups on the machine still share with it as before.
    Idle,
}

impl std::str::FromStr for HandlerPriority {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "normal" | "0" => Ok(HandlerPriority::Normal),
            "idle" => Ok(HandlerPriority::Idle),
            _ => match text.parse::<u8>() {
                Ok(nice @ 1..=19) => Ok(HandlerPriority::Nice(nice)),
                _ => Err(format!(
                    "`{text}` is not a handler priority: normal, idle, or a nice value 1-19"
                )),
            },
        }
    }
}

impl std::fmt::Display for HandlerPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerPriority::Normal => f.write_str("normal"),
            HandlerPriority::Nice(nice) => write!(f, "{nice}"),
            HandlerPriority::Idle => f.write_str("idle"),
        }
    }
}

impl HandlerPriority {
    /// Applies this priority to the calling thread, once, when it starts: only ever
    /// lowered, since an unprivileged thread cannot raise its priority again.
    /// Failure leaves the priority as it was.
    pub fn enter(self) {
        let result = match self {
            HandlerPriority::Normal => return,
            HandlerPriority::Nice(nice) => set_thread_nice(i32::from(nice)),
            HandlerPriority::Idle => set_thread_idle(),
        };
        if let Err(error) = result {
            tracing::warn!(%error, priority = %self, "cannot lower a handler thread's priority");
        }
    }
}

/// Linux: `setpriority` on a thread id applies to that thread alone.
#[cfg(target_os = "linux")]
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: plain system calls on the calling thread's own id.
    let result = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, current.max(nice))
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Linux: `sched_setscheduler` with pid 0 applies to the calling thread alone.
#[cfg(target_os = "linux")]
fn set_thread_idle() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on the calling thread, with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere `setpriority` would apply to the whole process.
#[cfg(not(target_os = "linux"))]
fn set_thread_nice(_nice: i32) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "per-thread priorities are set on Linux only",
    ))
}

#[cfg(not(target_os = "linux"))]
fn set_thread_idle() -> std::io::Result<()> {
    set_thread_nice(0)
}

impl State {
    fn intern(&mut self, tenant: &str) -> Arc<str> {
        match self.tenants.get_key_value(tenant) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(tenant);
                self.tenants.insert(name.clone(), Tenant::default());
                name
            }
        }
    }

    /// A call of `tenant`/`plugin` joins the line; a tenant (or plugin) that had
    /// nothing running or waiting restarts at the current clock.
    fn join(&mut self, tenant: &Arc<str>, plugin: &Arc<str>) {
        let now = self.now;
        let entry = self.tenants.entry(tenant.clone()).or_default();
        if entry.running == 0 && entry.waiting == 0 {
            entry.clock = entry.clock.max(now);
        }
        entry.waiting += 1;
        let floor = entry
            .plugins
            .values()
            .filter(|share| share.active > 0)
            .map(|share| share.used)
            .fold(f64::INFINITY, f64::min);
        let share = entry.plugins.entry(plugin.clone()).or_default();
        if share.active == 0 && floor.is_finite() {
            share.used = share.used.max(floor);
        }
        share.active += 1;
    }

    /// Where a call of `tenant`/`plugin` stands in fair order, the lower first:
    /// the tenant's clock, then its plugin's, then whoever was served longer ago.
    fn rank(&self, tenant: &Arc<str>, plugin: &Arc<str>) -> (f64, u64, f64, u64) {
        let Some(entry) = self.tenants.get(tenant) else {
            return (self.now, 0, 0.0, 0);
        };
        let share = entry.plugins.get(plugin).copied().unwrap_or_default();
        (entry.clock, entry.granted_at, share.used, share.granted_at)
    }

    /// True if a call waiting now comes before a call of `tenant`/`plugin`.
    fn overtaken(&self, tenant: &Arc<str>, plugin: &Arc<str>) -> bool {
        let mine = self.rank(tenant, plugin);
        self.waiting
            .iter()
            .any(|w| self.rank(&w.tenant, &w.plugin) < mine)
    }

    /// True if a call of `tenant`/`plugin` comes before a tenant running now.
    fn overtakes(&self, tenant: &Arc<str>, plugin: &Arc<str>) -> bool {
        let mine = self.rank(tenant, plugin);
        self.tenants.iter().any(|(name, entry)| {
            entry.running > 0
                && entry
                    .plugins
                    .iter()
                    .any(|(p, share)| share.active > 0 && self.rank(name, p) > mine)
        })
    }

    /// Hands free slots to the waiting calls that come first in fair order, and
    /// wakes them.
    fn grant(&mut self) {
        while self.free > 0 && !self.waiting.is_empty() {
            let key = |w: &Waiter| (self.rank(&w.tenant, &w.plugin), w.id);
            let best = (0..self.waiting.len())
                .min_by(|&a, &b| {
                    key(&self.waiting[a])
                        .partial_cmp(&key(&self.waiting[b]))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .expect("the line is not empty");
            let waiter = self.waiting.swap_remove(best);
            let tenant = self
                .tenants
                .get_mut(&waiter.tenant)
                .expect("waiting tenants are known");
            self.grants += 1;
            tenant.waiting -= 1;
            tenant.running += 1;
            tenant.granted_at = self.grants;
            if let Some(share) = tenant.plugins.get_mut(&waiter.plugin) {
                share.granted_at = self.grants;
            }
            self.now = self.now.max(tenant.clock);
            self.free -= 1;
            self.granted.insert(waiter.id);
            self.holders.insert(
                waiter.id,
                Holder {
                    tenant: waiter.tenant,
                    plugin: waiter.plugin,
                    since: Instant::now(),
                },
            );
            waiter.thread.unpark();
        }
    }

    /// Charges the call holding slot `id` for the time held since it was last
    /// charged.
    fn charge_holder(&mut self, id: u64) {
        let Some(holder) = self.holders.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let held = now - holder.since;
        holder.since = now;
        let (tenant, plugin) = (holder.tenant.clone(), holder.plugin.clone());
        self.charge(&tenant, &plugin, held);
    }

    /// Charges every call holding a slot up to now.
    fn charge_holders(&mut self) {
        let ids: Vec<u64> = self.holders.keys().copied().collect();
        for id in ids {
            self.charge_holder(id);
        }
    }

    /// The call holding slot `id` gives it back (it ended, paused or rotates out),
    /// charged to the end; the slot is free for [`State::grant`].
    fn release(&mut self, id: u64) {
        self.charge_holder(id);
        if let Some(holder) = self.holders.remove(&id) {
            self.leave(&holder.tenant, &holder.plugin);
        }
    }

    /// Charges `held` of slot time to a tenant's and its plugin's clocks.
    fn charge(&mut self, tenant: &Arc<str>, plugin: &Arc<str>, held: Duration) {
        let weight = f64::from(self.weights.get(&**tenant).copied().unwrap_or(1));
        let entry = self.tenants.entry(tenant.clone()).or_default();
        entry.clock += held.as_secs_f64() / weight;
        entry.used += held;
        if let Some(share) = entry.plugins.get_mut(plugin) {
            share.used += held.as_secs_f64();
        }
    }

    /// A call gives its slot back (it ended, or rotates out).
    fn leave(&mut self, tenant: &Arc<str>, plugin: &Arc<str>) {
        let entry = self.tenants.entry(tenant.clone()).or_default();
        entry.running = entry.running.saturating_sub(1);
        if let Some(share) = entry.plugins.get_mut(plugin) {
            share.active = share.active.saturating_sub(1);
        }
        self.free += 1;
    }
}

impl Slot {
    /// Offered at every epoch tick of a running call (and at once when a call that
    /// should overtake it arrives): charges the time held so far and, if a waiting
    /// call now comes before this one in fair order, gives the slot up and waits in
    /// line again. Calls of the same plugin never displace each other. Returns how
    /// long it waited (not the call's own time: its time limit is extended by as
    /// much).
    pub fn rotate(&mut self) -> Duration {
        if !self.held {
            return Duration::ZERO;
        }
        let scheduler = self.scheduler.clone();
        let mut state = scheduler.lock();
        state.charge_holder(self.id);
        if !state.overtaken(&self.tenant, &self.plugin) {
            return Duration::ZERO;
        }
        let left = Instant::now();
        state.release(self.id);
        let (state, id) = scheduler.wait_in_line(state, &self.tenant, &self.plugin);
        drop(state);
        self.id = id;
        let waited = left.elapsed();
        self.waited += waited;
        waited
    }

    /// Gives the slot up while the call is blocked outside wasm (a sleep, a wait
    /// for I/O): a blocked call uses no core, and a handler that sleeps must not
    /// keep other tenants off one. [`Slot::resume`] takes one again.
    pub fn pause(&mut self) {
        if !self.held {
            return;
        }
        let mut state = self.scheduler.lock();
        state.release(self.id);
        state.grant();
        self.held = false;
    }

    /// Waits in line for a slot again after [`Slot::pause`]; returns how long it
    /// waited (like [`Slot::rotate`], not the call's own time).
    pub fn resume(&mut self) -> Duration {
        if self.held {
            return Duration::ZERO;
        }
        let scheduler = self.scheduler.clone();
        let asked = Instant::now();
        let (state, id) = scheduler.wait_in_line(scheduler.lock(), &self.tenant, &self.plugin);
        drop(state);
        self.id = id;
        self.held = true;
        let waited = asked.elapsed();
        self.waited += waited;
        waited
    }

    /// Time this call waited for its slot, at first and in rotations.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut state = self.scheduler.lock();
        state.release(self.id);
        state.grant();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps `threads` calls of each tenant going for `run`, each call holding its
    /// slot for `call` and offering it every millisecond, and returns the slot time
    /// each tenant got. Calls sleep rather than spin: what is measured is the
    /// scheduler's choices, not how the OS shares a busy test machine.
    fn contend(
        scheduler: &Arc<Scheduler>,
        tenants: &[(&str, &str)],
        threads: usize,
        call: Duration,
        run: Duration,
    ) -> HashMap<String, Duration> {
        let until = Instant::now() + run;
        std::thread::scope(|scope| {
            for &(tenant, plugin) in tenants {
                for _ in 0..threads {
                    scope.spawn(move || {
                        while Instant::now() < until {
                            let mut slot = scheduler.acquire(tenant, plugin);
                            let mut left = call;
                            while !left.is_zero() {
                                let step = left.min(Duration::from_millis(1));
                                std::thread::sleep(step);
                                left -= step;
                                slot.rotate();
                            }
                        }
                    });
                }
            }
        });
        scheduler
            .usage()
            .into_iter()
            .map(|(t, u)| (t, u.used))
            .collect()
    }

    #[test]
    fn weights_one_and_three_share_the_slots_one_to_three() {
        let scheduler = Scheduler::new(2, || {});
        scheduler.set_weight("heavy", 3);
        let used = contend(
            &scheduler,
            &[("light", "a"), ("heavy", "b")],
            4,
            Duration::from_millis(20),
            Duration::from_millis(1500),
        );
        let ratio = used["heavy"].as_secs_f64() / used["light"].as_secs_f64();
        assert!((2.4..=3.6).contains(&ratio), "{used:?}: ratio {ratio}");
    }

    #[test]
    fn a_tenant_alone_gets_every_slot_and_idle_time_earns_no_credit() {
        let scheduler = Scheduler::new(2, || {});
        let alone = contend(
            &scheduler,
            &[("early", "a")],
            3,
            Duration::from_millis(5),
            Duration::from_millis(400),
        );
        // Work-conserving: both slots busy nearly all the time.
        assert!(alone["early"] > Duration::from_millis(700), "{alone:?}");
        // A tenant arriving now starts at the clock of the last grant: it does not
        // get the slots to itself to catch up on the time it was idle.
        let before = alone["early"];
        let used = contend(
            &scheduler,
            &[("early", "a"), ("late", "b")],
            3,
            Duration::from_millis(5),
            Duration::from_millis(400),
        );
        let early = used["early"] - before;
        let ratio = used["late"].as_secs_f64() / early.as_secs_f64();
        assert!((0.6..=1.6).contains(&ratio), "{used:?}: ratio {ratio}");
    }

    #[test]
    fn a_tenants_plugins_share_its_slots_evenly() {
        let scheduler = Scheduler::new(1, || {});
        let mut per_plugin = HashMap::new();
        let until = Instant::now() + Duration::from_millis(600);
        std::thread::scope(|scope| {
            let counts: Vec<_> = [("t", "one"), ("t", "two")]
                .into_iter()
                .map(|(tenant, plugin)| {
                    let scheduler = &scheduler;
                    // "one" has 4 threads, "two" 1: each plugin still gets half.
                    let threads = if plugin == "one" { 4 } else { 1 };
                    (0..threads)
                        .map(|_| {
                            scope.spawn(move || {
                                let mut held = Duration::ZERO;
                                while Instant::now() < until {
                                    let _slot = scheduler.acquire(tenant, plugin);
                                    let start = Instant::now();
                                    std::thread::sleep(Duration::from_millis(2));
                                    held += start.elapsed();
                                }
                                (plugin, held)
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            for handles in counts {
                for handle in handles {
                    let (plugin, held) = handle.join().expect("no panic");
                    *per_plugin.entry(plugin).or_insert(Duration::ZERO) += held;
                }
            }
        });
        let ratio = per_plugin["one"].as_secs_f64() / per_plugin["two"].as_secs_f64();
        assert!(
            (0.6..=1.6).contains(&ratio),
            "{per_plugin:?}: ratio {ratio}"
        );
    }

    #[test]
    fn a_paused_call_lets_another_run_and_waits_in_line_to_resume() {
        let scheduler = Scheduler::new(1, || {});
        let mut sleeper = scheduler.acquire("a", "p");
        sleeper.pause();
        // The only slot is free while the call is paused: another tenant gets it.
        let other = scheduler.acquire("b", "q");
        let usage = |tenant: &str| {
            let all = scheduler.usage();
            all.iter().find(|(t, _)| t == tenant).map(|(_, u)| *u)
        };
        assert_eq!(usage("a").map(|u| u.running), Some(0));
        std::thread::scope(|scope| {
            let resumed = scope.spawn(|| {
                sleeper.resume();
                sleeper
            });
            // The paused call cannot resume while the slot is taken.
            while usage("a").map(|u| u.waiting) != Some(1) {
                std::thread::yield_now();
            }
            drop(other);
            let sleeper = resumed.join().expect("no panic");
            assert_eq!(usage("a").map(|u| u.running), Some(1));
            // Pausing twice or dropping a paused slot gives nothing back twice.
            let mut sleeper = sleeper;
            sleeper.pause();
            sleeper.pause();
            drop(sleeper);
        });
        assert!(
            scheduler
                .usage()
                .iter()
                .all(|(_, u)| u.running == 0 && u.waiting == 0)
        );
        // The one slot is free again, and only one.
        assert_eq!(scheduler.lock().free, 1);
    }

    #[test]
    fn a_rotation_without_anyone_waiting_keeps_the_slot() {
        let scheduler = Scheduler::new(1, || {});
        let mut slot = scheduler.acquire("t", "p");
        assert_eq!(slot.rotate(), Duration::ZERO);
        assert_eq!(scheduler.usage()[0].1.running, 1);
        drop(slot);
        assert_eq!(scheduler.usage()[0].1.running, 0);
    }

    #[test]
    fn handler_priorities_read_as_the_cli_writes_them() {
        for (text, priority) in [
            ("normal", HandlerPriority::Normal),
            ("0", HandlerPriority::Normal),
            ("idle", HandlerPriority::Idle),
            ("10", HandlerPriority::Nice(10)),
            ("19", HandlerPriority::Nice(19)),
        ] {
            assert_eq!(text.parse::<HandlerPriority>(), Ok(priority));
        }
        for bad in ["20", "-5", "high", ""] {
            let error = bad.parse::<HandlerPriority>().unwrap_err();
            assert!(
                error.contains("normal, idle, or a nice value 1-19"),
                "{error}"
            );
        }
        assert_eq!(
            HandlerPriority::Nice(7).to_string().parse(),
            Ok(HandlerPriority::Nice(7))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_handler_thread_takes_its_priority_and_the_others_keep_theirs() {
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = (policy(), nice());
        let (idle, niced) = std::thread::scope(|scope| {
            let idle = scope.spawn(|| {
                HandlerPriority::Idle.enter();
                policy()
            });
            let niced = scope.spawn(|| {
                HandlerPriority::Nice(7).enter();
                nice()
            });
            (idle.join().unwrap(), niced.join().unwrap())
        });
        assert_eq!(idle, libc::SCHED_IDLE);
        assert_eq!(niced, before.1.max(7));
        // Per thread, not the process: this thread is as it was.
        assert_eq!((policy(), nice()), before);
    }
}
