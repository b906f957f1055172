//! `gatewatch doctor`: what this host supports and what would run here. Loads
//! both kernel objects (verifying every program) without attaching anything.
//! Exit 0 when all capture can run, 3 when part of it can (degraded), 1 when
//! none can.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::run::effective_config;
use super::RunArgs;
use crate::capture::verifier::{self, ProgramReport, INSN_LIMIT};
use crate::capture::{tls, Probe};

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    checks: Vec<Check>,
    programs: Vec<ProgramReport>,
    /// What `gatewatch run` would capture here.
    packet_capture: bool,
    tls_capture: bool,
    tls_endpoints: bool,
    errors: Vec<String>,
}

/// Exit codes: everything runs / part of the capture / none of it.
pub const EXIT_OK: u8 = 0;
pub const EXIT_NONE: u8 = 1;
pub const EXIT_DEGRADED: u8 = 3;

pub fn doctor_cmd(config: Option<&Path>, json: bool) -> Result<u8> {
    let cfg = effective_config(&RunArgs {
        config: config.map(Path::to_path_buf),
        ifaces: Vec::new(),
        outputs: Vec::new(),
        rules: None,
        check_config: false,
    })?;
    verifier::use_state_dir(&cfg.sensor.state_dir);
    let mut checks = host_checks();
    let mut errors = Vec::new();
    let mut programs = Vec::new();
    let (mut packet, mut tls_ok, mut endpoints) = (false, false, false);
    match Probe::load_degradable(&cfg.capture, &cfg.l4) {
        Ok(probe) => {
            programs.extend(probe.program_reports());
            packet = probe.has_packet_programs();
            if let Some(f) = &probe.packet_failure {
                errors.push(f.to_string());
            }
            if cfg.tls.enabled {
                match tls::verify_only(&probe) {
                    Ok((reports, tps)) => {
                        programs.extend(reports);
                        tls_ok = true;
                        endpoints = tps;
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }
        Err(e) => errors.push(format!("{e:#}")),
    }
    let libs = tls::discover();
    checks.push(Check {
        name: "libssl",
        ok: !libs.is_empty(),
        detail: if libs.is_empty() {
            "no OpenSSL libssl found: TLS capture would probe nothing".to_string()
        } else {
            libs.iter()
                .map(|l| l.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    });
    let report = Report {
        kernel: verifier::kernel_release(),
        checks,
        programs,
        packet_capture: packet,
        tls_capture: tls_ok,
        tls_endpoints: endpoints,
        errors,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, cfg.tls.enabled);
    }
    let degraded = super::run::degraded_paths(
        cfg.tls.enabled,
        report.packet_capture,
        report.tls_capture.then_some(report.tls_endpoints),
    );
    Ok(if !report.packet_capture && !report.tls_capture {
        EXIT_NONE
    } else if !degraded.is_empty() {
        EXIT_DEGRADED
    } else {
        EXIT_OK
    })
}

fn print_text(r: &Report, tls_enabled: bool) {
    println!("gatewatch doctor: Linux {}", r.kernel);
    for c in &r.checks {
        println!(
            "  [{}] {:<22} {}",
            if c.ok { " ok " } else { "MISS" },
            c.name,
            c.detail
        );
    }
    println!("  programs (verified instructions, limit {INSN_LIMIT} each):");
    for p in &r.programs {
        if p.loaded {
            println!(
                "    {:<10} {:<24} {:>9}",
                p.object, p.name, p.verified_insns
            );
        } else {
            println!("    {:<10} {:<24} not loaded", p.object, p.name);
        }
    }
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!("  gatewatch run would capture:");
    println!("    packets (TC)         {}", yes(r.packet_capture));
    if tls_enabled {
        println!("    TLS (libssl uprobes) {}", yes(r.tls_capture));
        println!("    TLS endpoints        {}", yes(r.tls_endpoints));
    } else {
        println!("    TLS                  disabled (tls.enabled = false)");
    }
    for e in &r.errors {
        println!("  error: {e}");
    }
}

/// What the kernel offers, probed without loading gatewatch's programs.
fn host_checks() -> Vec<Check> {
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let found = verifier::kernel_btf_has(&["BPF_TCX_INGRESS", "btf_trace_sock_send_length"]);
    let (tcx, sock_tps) = (found[0], found[1]);
    let caps = verifier::capabilities();
    let root_like = caps.contains(&"CAP_SYS_ADMIN")
        || (caps.contains(&"CAP_BPF") && caps.contains(&"CAP_PERFMON"));
    // SAFETY: libbpf's feature probes take no pointers but their (null) options.
    let ringbuf = unsafe {
        libbpf_sys::libbpf_probe_bpf_map_type(libbpf_sys::BPF_MAP_TYPE_RINGBUF, std::ptr::null())
    } == 1;
    // SAFETY: as above.
    let bpf_loop = unsafe {
        libbpf_sys::libbpf_probe_bpf_helper(
            libbpf_sys::BPF_PROG_TYPE_SCHED_CLS,
            libbpf_sys::BPF_FUNC_loop,
            std::ptr::null(),
        )
    } == 1;
    let uprobe = Path::new("/sys/bus/event_source/devices/uprobe/type").exists();
    vec![
        Check {
            name: "BTF",
            ok: btf,
            detail: if btf {
                "/sys/kernel/btf/vmlinux".to_string()
            } else {
                "missing: gatewatch needs a kernel built with CONFIG_DEBUG_INFO_BTF=y".to_string()
            },
        },
        Check {
            name: "privileges",
            ok: root_like,
            detail: if caps.is_empty() {
                "none of CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN".to_string()
            } else {
                caps.join(", ")
            },
        },
        Check {
            name: "ring buffer",
            ok: ringbuf,
            detail: "BPF_MAP_TYPE_RINGBUF (5.8+)".to_string(),
        },
        Check {
            name: "bpf_loop",
            ok: bpf_loop,
            detail: "bpf_loop helper (5.17+)".to_string(),
        },
        Check {
            name: "tcx",
            ok: tcx,
            detail: if tcx {
                "tcx links (6.6+)".to_string()
            } else {
                "no tcx: a clsact qdisc is used instead".to_string()
            },
        },
        Check {
            name: "uprobes",
            ok: uprobe,
            detail: "uprobe perf events (TLS capture)".to_string(),
        },
        Check {
            name: "socket tracepoints",
            ok: sock_tps,
            detail: if sock_tps {
                "sock_send_length/sock_recv_length (TLS endpoints)".to_string()
            } else {
                "missing (before 6.3): TLS events carry no addresses".to_string()
            },
        },
    ]
}
