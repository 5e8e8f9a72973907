//! Per-tenant quotas, set by the operator (`--tenants FILE`), never by a tenant's
//! own manifest: requests a second (a token bucket holding one second of requests)
//! and requests in flight. In `serve` a request over its tenant's quota is refused
//! at once — HTTP 429, gRPC RESOURCE_EXHAUSTED — with the quota in the reason, and
//! counted in `runinfer_tenant_refused_requests_total` / `_examples_total`. In `run`
//! a line is a request and the job waits instead ([`Pacer`], and fewer lines in
//! flight).
//!
//! The same file sets each tenant's `weight`, its share of the cores when they are
//! contended (the host's [`crate::schedule`]), and may list its `plugins`: then only
//! those are the tenant, whatever other manifests claim.
//!
//! ```toml
//! [tenants.acme]
//! requests_per_sec = 100
//! max_in_flight = 8
//! weight = 3
//! plugins = ["iris", "ocr"]
//! ```

use crate::host::TenantAssignment;
use crate::metrics::TenantMetrics;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest weight: one tenant at most this many times another's share.
const MAX_WEIGHT: u32 = 1000;

/// One tenant's limits and share (each optional).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantQuota {
    /// Requests a second, on average; bursts of up to one second's worth.
    pub requests_per_sec: Option<f64>,
    /// Requests being answered at once.
    pub max_in_flight: Option<u32>,
    /// The tenant's share of the cores when they are contended, relative to the
    /// others' (default 1): see [`crate::schedule`].
    pub weight: Option<u32>,
    /// The plugins that are this tenant, whatever their manifests declare; a plugin
    /// that claims the tenant without being listed is not it
    /// ([`TenantAssignment`]).
    pub plugins: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    #[serde(default)]
    tenants: BTreeMap<String, TenantQuota>,
}

/// A tenant's bucket and requests in flight.
#[derive(Debug)]
struct Usage {
    bucket: Option<Bucket>,
    in_flight: u32,
}

/// A token bucket: `rate` requests a second, holding one second's worth (at least
/// one request), full at first.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: rate.max(1.0),
            refilled: Instant::now(),
        }
    }

    fn capacity(&self) -> f64 {
        self.rate.max(1.0)
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        self.refilled = now;
    }

    /// How long until `n` requests may go (zero if they may now).
    fn time_until(&mut self, n: f64) -> Duration {
        self.refill();
        // A rate the file accepts (any number above 0) may be so small that the wait
        // overflows a Duration: then it is forever, not a panic.
        Duration::try_from_secs_f64(((n - self.tokens) / self.rate).max(0.0))
            .unwrap_or(Duration::MAX)
    }
}

/// `run`'s side of a tenant's request rate: every line is a request, and the job
/// waits for its turn where `serve` would refuse.
#[derive(Debug)]
pub struct Pacer(Bucket);

impl Pacer {
    /// Lines at `requests_per_sec` (above 0, as a tenants file has it).
    pub fn new(requests_per_sec: f64) -> Pacer {
        Pacer(Bucket::new(requests_per_sec))
    }

    /// The most lines one [`Pacer::wait`] may ask for: a second's worth.
    pub fn burst(&self) -> usize {
        self.0.capacity() as usize
    }

    /// Blocks the calling thread until `lines` (at most [`Pacer::burst`]) may go,
    /// and takes their turn.
    pub fn wait(&mut self, lines: usize) {
        let n = lines.min(self.burst()) as f64;
        loop {
            let wait = self.0.time_until(n);
            if wait.is_zero() {
                break;
            }
            std::thread::sleep(wait);
        }
        self.0.tokens -= n;
    }
}

/// The quotas of every tenant and what each uses now.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: BTreeMap<String, TenantQuota>,
    usage: Mutex<HashMap<String, Usage>>,
}

impl Quotas {
    /// Reads and checks a tenants file; errors name the file, the key and what was
    /// expected.
    pub fn load(path: &Path) -> Result<Quotas, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Quotas::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a tenants file's text.
    pub fn parse(text: &str) -> Result<Quotas, String> {
        let file: TenantsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (tenant, quota) in &file.tenants {
            crate::manifest::check_name(tenant).map_err(|m| format!("`tenants.{tenant}`: {m}"))?;
            if let Some(rate) = quota.requests_per_sec
                && !(rate.is_finite() && rate > 0.0)
            {
                return Err(format!(
                    "`tenants.{tenant}.requests_per_sec`: expected a number above 0, got {rate}"
                ));
            }
            if let Some(weight) = quota.weight
                && !(1..=MAX_WEIGHT).contains(&weight)
            {
                return Err(format!(
                    "`tenants.{tenant}.weight`: expected 1 to {MAX_WEIGHT}, got {weight}"
                ));
            }
            for plugin in quota.plugins.iter().flatten() {
                crate::manifest::check_name(plugin)
                    .map_err(|m| format!("`tenants.{tenant}.plugins`: {m}"))?;
                if let Some(other) = file
                    .tenants
                    .iter()
                    .find(|(t, q)| *t != tenant && q.plugins.iter().flatten().any(|p| p == plugin))
                {
                    return Err(format!(
                        "`tenants.{tenant}.plugins`: plugin `{plugin}` is also listed by tenant `{}`",
                        other.0
                    ));
                }
            }
            if quota.max_in_flight == Some(0) {
                return Err(format!(
                    "`tenants.{tenant}.max_in_flight`: expected at least 1, got 0"
                ));
            }
        }
        Ok(Quotas {
            limits: file.tenants,
            usage: Mutex::default(),
        })
    }

    /// Gives `host` the operator's tenant weights and plugin assignment; before
    /// its plugins load, since a plugin's tenant is settled when it loads.
    pub fn apply_to(&self, host: &crate::Host) {
        for (tenant, weight) in self.weights() {
            host.scheduler().set_weight(tenant, weight);
        }
        host.assign_tenants(self.assignment());
    }

    /// Which plugins the operator put in which tenant.
    pub fn assignment(&self) -> TenantAssignment {
        let mut assignment = TenantAssignment::default();
        for (tenant, quota) in &self.limits {
            if let Some(plugins) = &quota.plugins {
                assignment.assign(tenant, plugins.iter().cloned());
            }
        }
        assignment
    }

    /// The weights the operator set, by tenant.
    pub fn weights(&self) -> impl Iterator<Item = (&str, u32)> {
        self.limits
            .iter()
            .filter_map(|(tenant, quota)| Some((tenant.as_str(), quota.weight?)))
    }

    /// The limits of `tenant`, if the operator set any.
    pub fn quota(&self, tenant: &str) -> Option<&TenantQuota> {
        self.limits.get(tenant)
    }

    /// The tenants the operator listed.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.limits.keys().map(String::as_str)
    }

    /// Requests of `tenant` in flight now, if the operator gave it a quota (only
    /// those are counted).
    pub fn in_flight(&self, tenant: &str) -> Option<u32> {
        self.limits.get(tenant)?;
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        Some(usage.get(tenant).map_or(0, |used| used.in_flight))
    }

    /// Admits a request of `tenant` (`examples` rows) or refuses it with the reason.
    /// The admission holds its place in flight until dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        tenant: &str,
        examples: usize,
        metrics: &TenantMetrics,
    ) -> Result<Option<Admission>, String> {
        let Some(quota) = self.limits.get(tenant) else {
            return Ok(None);
        };
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let used = usage.entry(tenant.to_string()).or_insert_with(|| Usage {
            bucket: quota.requests_per_sec.map(Bucket::new),
            in_flight: 0,
        });
        let over_rate = used
            .bucket
            .as_mut()
            .is_some_and(|bucket| !bucket.time_until(1.0).is_zero());
        let refusal = match (quota.requests_per_sec, quota.max_in_flight) {
            (_, Some(max)) if used.in_flight >= max => Some(format!(
                "tenant `{tenant}` has {max} requests in flight, its quota; retry when one is answered"
            )),
            (Some(rate), _) if over_rate => Some(format!(
                "tenant `{tenant}` is over its quota of {rate} requests/s; retry later"
            )),
            _ => None,
        };
        if let Some(reason) = refusal {
            drop(usage);
            metrics.refused(tenant, examples);
            return Err(reason);
        }
        if let Some(bucket) = &mut used.bucket {
            bucket.tokens -= 1.0;
        }
        used.in_flight += 1;
        Ok(Some(Admission {
            quotas: self.clone(),
            tenant: tenant.to_string(),
        }))
    }
}

/// A request's place within its tenant's quota; given back when dropped.
pub(crate) struct Admission {
    quotas: Arc<Quotas>,
    tenant: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut usage = self.quotas.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(used) = usage.get_mut(&self.tenant) {
            used.in_flight = used.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_and_quotas_refuse_past_their_limits() {
        for (text, expected) in [
            (
                "[tenants.a]\nrequests_per_sec = 0\n",
                "expected a number above 0",
            ),
            ("[tenants.a]\nmax_in_flight = 0\n", "expected at least 1"),
            ("[tenants.\"a b\"]\nmax_in_flight = 1\n", "`tenants.a b`"),
            ("[tenants.a]\nweight = 0\n", "expected 1 to 1000"),
            ("[tenants.a]\npriority = 1\n", "unknown field `priority`"),
            (
                "[tenants.a]\nplugins = [\"p\"]\n[tenants.b]\nplugins = [\"p\"]\n",
                "plugin `p` is also listed by tenant `b`",
            ),
            ("[tenants.a]\nplugins = [\"a/b\"]\n", "`tenants.a.plugins`"),
        ] {
            let err = Quotas::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let quotas = Arc::new(
            Quotas::parse(
                "[tenants.a]\nmax_in_flight = 2\n[tenants.b]\nrequests_per_sec = 0.001\n",
            )
            .unwrap(),
        );
        let metrics = TenantMetrics::default();
        // No quota: always admitted.
        assert!(quotas.admit("c", 1, &metrics).unwrap().is_none());
        let first = quotas.admit("a", 1, &metrics).unwrap();
        let second = quotas.admit("a", 1, &metrics).unwrap();
        let err = quotas.admit("a", 3, &metrics).err().unwrap();
        assert!(err.contains("2 requests in flight"), "{err}");
        drop(first);
        let third = quotas.admit("a", 1, &metrics).unwrap();
        assert!(third.is_some() && second.is_some());
        // A bucket of one request, refilled once in 1000 s.
        assert!(quotas.admit("b", 1, &metrics).is_ok());
        let err = quotas.admit("b", 5, &metrics).err().unwrap();
        assert!(err.contains("over its quota of 0.001 requests/s"), "{err}");
    }

    #[test]
    fn a_pacer_lets_a_seconds_worth_go_at_once_then_waits() {
        let mut pacer = Pacer::new(50.0);
        assert_eq!(pacer.burst(), 50);
        let start = Instant::now();
        pacer.wait(50);
        let burst = start.elapsed();
        // 25 more lines at 50 a second: half a second, at least.
        pacer.wait(25);
        let paced = start.elapsed() - burst;
        assert!(paced >= Duration::from_millis(490), "{paced:?}");
        // Below one request a second, one line still goes at a time.
        assert_eq!(Pacer::new(0.5).burst(), 1);
        // A rate too small for a Duration waits forever instead of panicking.
        let mut bucket = Bucket::new(1e-300);
        bucket.tokens = 0.0;
        assert_eq!(bucket.time_until(1.0), Duration::MAX);
    }
}
