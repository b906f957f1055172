//! Capture stage: loads the kernel programs, configures them (header table,
//! hash key, limits), attaches them to interfaces or feeds them a pcap, and
//! turns ring-buffer records into typed events.

pub mod attach;
pub mod clock;
pub mod counters;
pub mod decode;
pub mod governor;
pub mod headers;
pub mod l4;
pub mod replay;
pub mod skel;
pub mod sweep;
pub mod target;
pub mod tls;
pub mod verifier;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use serde::Deserialize;

use self::counters::{KernelCounters, COUNTER_NAMES};
use self::headers::HeaderTable;
use self::skel::{NetSkel, NetSkelBuilder};

/// `[capture]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Header values copied into events (lower-case names, at most 12).
    pub headers: Vec<String>,
    /// Only parse TCP traffic to or from these ports; empty = every port.
    pub ports: Vec<u16>,
    /// Header-block bytes parsed per message before it is flagged `truncated`.
    pub parse_window: u32,
    /// Body bytes scanned for JSON-RPC metadata per message (0 = off).
    pub body_scan_bytes: u32,
    /// A message waiting for its body is emitted (`body_scan: "ended"`) when the
    /// next bytes of its flow come later than this, in milliseconds.
    pub body_wait_ms: u32,
    /// Kernel → userspace ring buffer size in MiB (power of two).
    pub ringbuf_mb: u32,
    /// Kernel memory (MiB) for each table of messages under way between
    /// segments or SSL calls (packet path and TLS path each get one); the
    /// entry count follows from it. A full table never evicts: a new message
    /// that cannot be saved is emitted at once, truncated, and counted
    /// (`flow_table_full`, rule GW-SENSOR-001).
    pub flow_table_mb: u32,
    /// Entries per table, overriding `flow_table_mb` (0: from memory).
    pub flow_table_size: u32,
    /// A message whose header block (or a body being skipped) sees no end
    /// this many seconds after it began is taken out of the table by the
    /// sweep: a header block is emitted truncated, a skipped body forgotten.
    pub flow_idle_secs: u32,
    pub attach_mode: attach::AttachMode,
    /// Share of one CPU (percent) that kernel parsing plus the sensor process
    /// may use; beyond it fewer connections are inspected (see governor.rs).
    /// 0 = no budget: every connection is inspected, whatever it costs.
    pub cpu_budget_percent: f64,
    /// Query parameters whose values leave the kernel in clear (at most 8
    /// names of 1..16 bytes, matched case-insensitively). Every other query
    /// value is masked with `*` in the kernel, its length kept: an allow list,
    /// since a secret can hide under any name (api_key, sig, X-Amz-Signature).
    pub query_clear: Vec<String>,
    /// Test only: run the kernel parser one byte per step, never its
    /// multi-byte steps. That path is the reference the fast paths are checked
    /// against (tests/kernel_parser.rs); not settable from the config file.
    #[doc(hidden)]
    #[serde(skip)]
    pub byte_path_only: bool,
    /// Test only: read every packet header with bpf_skb_load_bytes, never
    /// straight from the linear area, as for frames whose headers are paged
    /// (test runs' frames are always linear); not settable from the config file.
    #[doc(hidden)]
    #[serde(skip)]
    pub skb_loads_only: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            headers: headers::DEFAULT_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ports: Vec::new(),
            parse_window: 16384,
            body_scan_bytes: 512,
            body_wait_ms: 1000,
            ringbuf_mb: 8,
            flow_table_mb: 16,
            flow_table_size: 0,
            flow_idle_secs: 60,
            attach_mode: attach::AttachMode::Auto,
            cpu_budget_percent: 0.0,
            query_clear: Vec::new(),
            byte_path_only: false,
            skb_loads_only: false,
        }
    }
}

impl CaptureConfig {
    pub fn validate(&self) -> Result<HeaderTable> {
        let table = HeaderTable::new(&self.headers).context("capture.headers")?;
        if self.ports.len() > 16 {
            bail!(
                "capture.ports: at most 16 ports, {} given",
                self.ports.len()
            );
        }
        if !(256..=65536).contains(&self.parse_window) {
            bail!(
                "capture.parse_window: must be 256..=65536, got {}",
                self.parse_window
            );
        }
        if self.body_scan_bytes > 65536 {
            bail!(
                "capture.body_scan_bytes: must be 0..=65536, got {}",
                self.body_scan_bytes
            );
        }
        if !(1..=60_000).contains(&self.body_wait_ms) {
            bail!(
                "capture.body_wait_ms: must be 1..=60000, got {}",
                self.body_wait_ms
            );
        }
        if !self.ringbuf_mb.is_power_of_two() || self.ringbuf_mb > 1024 {
            bail!(
                "capture.ringbuf_mb: must be a power of two up to 1024, got {}",
                self.ringbuf_mb
            );
        }
        if !(1..=1024).contains(&self.flow_table_mb) {
            bail!(
                "capture.flow_table_mb: must be 1..=1024, got {}",
                self.flow_table_mb
            );
        }
        if self.flow_table_size != 0 && !(16..=1_048_576).contains(&self.flow_table_size) {
            bail!(
                "capture.flow_table_size: must be 0 (from flow_table_mb) or 16..=1048576, got {}",
                self.flow_table_size
            );
        }
        if !(1..=3600).contains(&self.flow_idle_secs) {
            bail!(
                "capture.flow_idle_secs: must be 1..=3600, got {}",
                self.flow_idle_secs
            );
        }
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let budget = self.cpu_budget_percent;
        if !(budget == 0.0 || (1.0..=100.0 * ncpu).contains(&budget)) {
            bail!(
                "capture.cpu_budget_percent: must be 0 (no budget) or 1..={} (percent of one CPU, {} CPUs here), got {budget}",
                100.0 * ncpu,
                ncpu
            );
        }
        self.query_clear_words()?;
        Ok(table)
    }

    /// Entries of each flow table: `flow_table_size`, or as many as
    /// `flow_table_mb` holds (a saved message, its key, its stashed secret
    /// part and the kernel's per-element overhead).
    pub fn flow_table_entries(&self) -> u32 {
        if self.flow_table_size != 0 {
            return self.flow_table_size;
        }
        const KEY_AND_OVERHEAD: usize =
            40 + 64 + std::mem::size_of::<skel::types::gw_secret_part>() + 64;
        let per_entry = std::mem::size_of::<skel::types::gw_work>() + KEY_AND_OVERHEAD;
        let n = (self.flow_table_mb as usize) << 20;
        (n / per_entry).clamp(16, 1_048_576) as u32
    }

    /// `query_clear` as the kernel compares it: (length, word 0, word 1) of
    /// each lower-cased name.
    pub fn query_clear_words(&self) -> Result<Vec<(u8, u64, u64)>> {
        if self.query_clear.len() > QUERY_CLEAR_MAX {
            bail!(
                "capture.query_clear: at most {QUERY_CLEAR_MAX} names, {} given",
                self.query_clear.len()
            );
        }
        let mut out = Vec::new();
        for name in &self.query_clear {
            let lower = name.to_ascii_lowercase();
            let b = lower.as_bytes();
            if b.is_empty()
                || b.len() > 16
                || !b
                    .iter()
                    .all(|c| c.is_ascii_graphic() && !b"&=#;?%".contains(c))
            {
                bail!(
                    "capture.query_clear: {name:?} must be 1..16 printable bytes without & = # ; ? %"
                );
            }
            if lower == "session_id" || headers::looks_secret(&lower) {
                bail!(
                    "capture.query_clear: {name:?} looks like it carries a secret; its value stays masked"
                );
            }
            let mut w = [0u8; 16];
            w[..b.len()].copy_from_slice(b);
            let w0 = u64::from_le_bytes(w[..8].try_into().unwrap_or_default());
            let w1 = u64::from_le_bytes(w[8..].try_into().unwrap_or_default());
            out.push((b.len() as u8, w0, w1));
        }
        Ok(out)
    }
}

/// Query names `capture.query_clear` can hold (GW_QUERY_CLEAR_MAX in gw_http.h).
pub const QUERY_CLEAR_MAX: usize = 8;

const _: () = assert!(
    std::mem::size_of::<skel::types::gw_hdr_slot>() == headers::HDR_SLOT_SIZE,
    "struct gw_hdr_slot and headers::HDR_SLOT_SIZE disagree"
);

/// The loaded kernel programs and maps. Dropping it unloads everything.
pub struct Probe {
    pub skel: NetSkel<'static>,
    pub table: HeaderTable,
    /// Why the packet programs (TC ingress and egress) are not loaded, when the
    /// kernel refused them and the caller allowed running without them
    /// ([`Probe::load_degradable`]): the maps are there for TLS capture.
    pub packet_failure: Option<verifier::LoadFailure>,
}

impl Probe {
    /// Open, configure and load `net.bpf.c`, then write the header table and a
    /// fresh random hash key (frozen: not even we can change it afterwards).
    pub fn load(cfg: &CaptureConfig) -> Result<Probe> {
        Probe::load_with(cfg, &l4::L4Config::default())
    }

    pub fn load_with(cfg: &CaptureConfig, l4cfg: &l4::L4Config) -> Result<Probe> {
        Probe::load_inner(cfg, l4cfg, None, false)
    }

    /// As [`Probe::load_with`], but when the verifier rejects the packet
    /// programs, load the maps alone (so TLS capture can run) and say why in
    /// `packet_failure`. What `gatewatch run` and `doctor` use.
    pub fn load_degradable(cfg: &CaptureConfig, l4cfg: &l4::L4Config) -> Result<Probe> {
        Probe::load_inner(cfg, l4cfg, None, true)
    }

    /// The packet object's programs, loaded or not, with the verifier's counts.
    pub fn program_reports(&self) -> Vec<verifier::ProgramReport> {
        use libbpf_rs::skel::Skel;
        verifier::program_reports("net.bpf.c", self.skel.object())
    }

    /// Whether the TC programs are loaded (and so can be attached).
    pub fn has_packet_programs(&self) -> bool {
        self.packet_failure.is_none()
    }

    /// Test only: load a second probe that hashes with `other`'s key (the key
    /// map is shared, not copied), so two builds of the parser can be compared
    /// event for event, hashes included.
    #[doc(hidden)]
    pub fn load_sharing_key(cfg: &CaptureConfig, other: &Probe) -> Result<Probe> {
        Probe::load_inner(cfg, &l4::L4Config::default(), Some(other), false)
    }

    fn load_inner(
        cfg: &CaptureConfig,
        l4cfg: &l4::L4Config,
        key_of: Option<&Probe>,
        degradable: bool,
    ) -> Result<Probe> {
        let table = cfg.validate()?;
        // The name table's hash seed: fresh per load, so which names share a
        // slot cannot be known in advance; one that places every name within
        // the kernel's probe bound (nearly all do).
        let (hdr_seed, hdr_slots) = (0..256)
            .find_map(|_| {
                let mut s = [0u8; 8];
                getrandom::fill(&mut s).ok()?;
                let seed = u64::from_ne_bytes(s);
                table.layout(seed).map(|l| (seed, l))
            })
            .context("placing the header table: no seed fits")?;
        bump_memlock_rlimit();
        let (skel, packet_failure) = match load_net(cfg, l4cfg, key_of, hdr_seed, true) {
            Ok(skel) => (skel, None),
            Err(e) => match e.downcast::<verifier::LoadFailure>() {
                Ok(f) if degradable && f.kind == verifier::FailureKind::Rejected => {
                    tracing::error!("packet capture unavailable: {f}");
                    let skel = load_net(cfg, l4cfg, key_of, hdr_seed, false)
                        .context("loading net.bpf.c's maps without its TC programs")?;
                    (skel, Some(f))
                }
                Ok(f) => return Err(f.into()),
                Err(e) => return Err(e),
            },
        };

        for (slot, entry) in hdr_slots.iter().enumerate() {
            let Some(entry) = entry.map(|i| &table.entries[i]) else {
                continue;
            };
            skel.maps
                .gw_hdr_table
                .update(
                    &(slot as u32).to_ne_bytes(),
                    &entry.slot_bytes(),
                    MapFlags::ANY,
                )
                .with_context(|| format!("writing header {:?} to the kernel table", entry.name))?;
        }
        write_admission(&skel, governor::ADMIT_ALL, random_u64()?, false)?;
        if key_of.is_some() {
            return Ok(Probe {
                skel,
                table,
                packet_failure,
            }); // the key is the other probe's, already frozen
        }
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("generating hash key: {e}"))?;
        skel.maps
            .gw_hash_key
            .update(&0u32.to_ne_bytes(), &key, MapFlags::ANY)
            .context("writing hash key")?;
        // SAFETY: a valid map fd owned by the skeleton.
        let rc = unsafe { libbpf_sys::bpf_map_freeze(skel.maps.gw_hash_key.as_fd().as_raw_fd()) };
        if rc != 0 {
            bail!("freezing hash key map: {}", std::io::Error::last_os_error());
        }
        key.fill(0);
        Ok(Probe {
            skel,
            table,
            packet_failure,
        })
    }

    /// Share of connections the kernel inspects when a CPU budget is on, out
    /// of [`governor::ADMIT_ALL`] (ignored by the kernel without a budget).
    /// `new_key` draws a new sampling key, so other connections are inspected
    /// from now on; while `grace` is set, a skipped connection with a message
    /// under way finishes it (gw_budget.h).
    pub fn set_admission(&self, admit: u32, new_key: bool, grace: bool) -> Result<()> {
        let key = if new_key {
            random_u64()?
        } else {
            self.skel
                .maps
                .gw_admit
                .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
                .context("reading the admission state")?
                .and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map_or(0, u64::from_ne_bytes)
        };
        write_admission(&self.skel, admit, key, grace)
    }

    /// [`Probe::set_admission`] keeping the current key, without grace.
    pub fn set_admit(&self, admit: u32) -> Result<()> {
        self.set_admission(admit, false, false)
    }

    /// Sum of the per-CPU counters.
    pub fn counters(&self) -> Result<KernelCounters> {
        let mut out = KernelCounters::default();
        for (i, slot) in out.values.iter_mut().enumerate().take(COUNTER_NAMES.len()) {
            let per_cpu = self
                .skel
                .maps
                .gw_counters
                .lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)
                .context("reading kernel counters")?
                .unwrap_or_default();
            *slot = per_cpu
                .iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum();
        }
        Ok(out)
    }
}

/// Open, configure and load net.bpf.c; without `packet`, its maps only (the
/// TC programs not loaded). A refusal comes back as a [`verifier::LoadFailure`].
fn load_net(
    cfg: &CaptureConfig,
    l4cfg: &l4::L4Config,
    key_of: Option<&Probe>,
    hdr_seed: u64,
    packet: bool,
) -> Result<NetSkel<'static>> {
    // The skeleton borrows its object for its whole life; the sensor loads
    // once per process, so a leaked box is the simple, honest lifetime.
    let object: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
    let mut open = NetSkelBuilder::default()
        .open(object)
        .context("opening BPF object (is this a kernel with BTF?)")?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.gw_parse_window = cfg.parse_window;
        ro.gw_body_scan_window = cfg.body_scan_bytes;
        ro.gw_body_wait_ns = u64::from(cfg.body_wait_ms) * 1_000_000;
        ro.gw_nports = cfg.ports.len() as u32;
        for (i, p) in cfg.ports.iter().enumerate() {
            ro.gw_ports[i] = *p;
        }
        ro.gw_l4_enabled = u8::from(l4cfg.enabled);
        ro.gw_l4_prefix_v4 = l4cfg.prefix_v4;
        ro.gw_l4_prefix_v6 = l4cfg.prefix_v6;
        ro.gw_byte_path_only = u8::from(cfg.byte_path_only);
        ro.gw_skb_loads_only = u8::from(cfg.skb_loads_only);
        ro.gw_hdr_seed = hdr_seed;
        ro.gw_budget_on = u8::from(cfg.cpu_budget_percent > 0.0);
        let clear = cfg.query_clear_words()?;
        ro.gw_nquery_clear = clear.len() as u8;
        for (i, (len, w0, w1)) in clear.into_iter().enumerate() {
            ro.gw_qclear_len[i] = len;
            ro.gw_qclear_w0[i] = w0;
            ro.gw_qclear_w1[i] = w1;
        }
    }
    if let Some(other) = key_of {
        open.maps
            .gw_hash_key
            .reuse_fd(other.skel.maps.gw_hash_key.as_fd())
            .context("sharing the hash key map")?;
    }
    open.maps
        .gw_l4
        .set_max_entries(l4cfg.table_size)
        .context("sizing l4 counter map")?;
    open.maps
        .gw_events
        .set_max_entries(cfg.ringbuf_mb * 1024 * 1024)
        .context("sizing ring buffer")?;
    let flows = cfg.flow_table_entries();
    open.maps
        .gw_flows
        .set_max_entries(flows)
        .context("sizing flow table")?;
    open.maps
        .gw_flow_secrets
        .set_max_entries(flows)
        .context("sizing the flow table's secret stash")?;
    if !packet {
        open.progs.gw_tc_ingress.set_autoload(false);
        open.progs.gw_tc_egress.set_autoload(false);
    }
    if fault_injected("net") && packet {
        let log = injected_rejection("gw_tc_ingress");
        return Err(verifier::LoadFailure::from_log("net.bpf.c", "injected", &log).into());
    }
    verifier::load_reported("net.bpf.c", || open.load())
}

/// Test and doctor only: `GATEWATCH_TEST_REJECT=net` (or `tls`, or both,
/// comma-separated) makes the loader act as if the kernel's verifier refused
/// that object, so the degraded paths and their messages can be exercised on a
/// kernel that accepts everything.
pub(crate) fn fault_injected(object: &str) -> bool {
    std::env::var("GATEWATCH_TEST_REJECT")
        .map(|v| v.split(',').any(|o| o.trim() == object))
        .unwrap_or(false)
}

/// The verifier log an injected rejection (GATEWATCH_TEST_REJECT) reports.
pub(crate) fn injected_rejection(program: &str) -> String {
    format!(
        "libbpf: prog '{program}': BPF program load failed: -EINVAL
libbpf: prog '{program}': -- BEGIN PROG LOAD LOG --
injected by GATEWATCH_TEST_REJECT: the kernel was not asked
-- END PROG LOAD LOG --
"
    )
}
const _: () = assert!(
    std::mem::size_of::<skel::types::gw_admit_state>() == 16,
    "struct gw_admit_state and write_admission disagree"
);

/// `struct gw_admit_state` as the kernel reads it: key, admit, grace.
fn write_admission(skel: &NetSkel<'_>, admit: u32, key: u64, grace: bool) -> Result<()> {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&key.to_ne_bytes());
    v[8..12].copy_from_slice(&admit.to_ne_bytes());
    v[12..16].copy_from_slice(&u32::from(grace).to_ne_bytes());
    skel.maps
        .gw_admit
        .update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)
        .context("writing the admission state")
}

fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("drawing a random key: {e}"))?;
    Ok(u64::from_ne_bytes(b))
}

fn bump_memlock_rlimit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; harmless after.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; failure only matters on old kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}
