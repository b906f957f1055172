//! Attaching the TC programs to interfaces. tcx links (kernel 6.6+) are the
//! default: they belong to our file descriptors, so nothing stays attached when
//! the sensor exits, even on SIGKILL. Older kernels fall back to a clsact qdisc,
//! which is removed on exit when we created it.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use anyhow::{bail, Context, Result};
use libbpf_rs::{AsRawLibbpf, Link, Program, TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx when the kernel has it, clsact otherwise.
    #[default]
    Auto,
    Tcx,
    Clsact,
}

pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!(
            "no interface named {name:?} in this network namespace (see `ip link`): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(idx)
}

pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

fn is_loopback(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .map(|flags| flags & libc::IFF_LOOPBACK as u32 != 0)
        .unwrap_or(name == "lo")
}

enum Attachment {
    Tcx(#[allow(dead_code)] Link),
    Clsact(TcHook),
}

/// Everything attached to one interface; detaches on drop.
pub struct IfaceAttachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: &'static str,
    parts: Vec<Attachment>,
    /// We created the clsact qdisc, so we remove it (with both directions) on exit.
    created_qdisc: bool,
}

impl Drop for IfaceAttachment {
    fn drop(&mut self) {
        for part in self.parts.drain(..) {
            match part {
                Attachment::Tcx(link) => drop(link),
                Attachment::Clsact(mut hook) => {
                    if let Err(e) = hook.detach() {
                        tracing::warn!(iface = %self.iface, "detaching tc filter: {e}");
                    }
                }
            }
        }
        if self.created_qdisc {
            let mut raw = clsact_hook(self.ifindex);
            // SAFETY: raw is a valid hook description; destroying ingress|egress removes the qdisc.
            let rc = unsafe { libbpf_sys::bpf_tc_hook_destroy(&mut raw) };
            if rc != 0 {
                tracing::warn!(iface = %self.iface, "removing clsact qdisc: {}", std::io::Error::from_raw_os_error(-rc));
            }
        }
        tracing::info!(iface = %self.iface, "detached");
    }
}

fn clsact_hook(ifindex: u32) -> libbpf_sys::bpf_tc_hook {
    libbpf_sys::bpf_tc_hook {
        sz: std::mem::size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex: ifindex as i32,
        attach_point: libbpf_sys::BPF_TC_INGRESS | libbpf_sys::BPF_TC_EGRESS,
        ..Default::default()
    }
}

/// Create the clsact qdisc unless one exists; true when we created it.
fn ensure_clsact(ifindex: u32) -> Result<bool> {
    let mut raw = clsact_hook(ifindex);
    // SAFETY: raw is a valid, initialised hook description.
    let rc = unsafe { libbpf_sys::bpf_tc_hook_create(&mut raw) };
    if rc != 0 && rc != -libc::EEXIST {
        bail!(
            "creating clsact qdisc: {}",
            std::io::Error::from_raw_os_error(-rc)
        );
    }
    Ok(rc == 0)
}

fn attach_tcx(prog: &Program, ifindex: u32, egress: bool) -> Result<Link> {
    // libbpf-rs 0.27 has no wrapper for tcx; call libbpf directly. The direction
    // comes from the program's section (tcx/ingress, tcx/egress).
    let _ = egress;
    let opts = libbpf_sys::bpf_tcx_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as _,
        ..Default::default()
    };
    // SAFETY: the program pointer is valid while `prog` lives; libbpf returns an owned link or NULL.
    let ptr = unsafe {
        libbpf_sys::bpf_program__attach_tcx(prog.as_libbpf_object().as_ptr(), ifindex as i32, &opts)
    };
    let ptr = NonNull::new(ptr).ok_or_else(std::io::Error::last_os_error)?;
    // SAFETY: ptr is a freshly created link we now own.
    Ok(unsafe { Link::from_ptr(ptr) })
}

fn attach_clsact(prog: &Program, ifindex: u32, egress: bool) -> Result<Attachment> {
    let mut builder = TcHookBuilder::new(prog.as_fd());
    builder
        .ifindex(ifindex as i32)
        .replace(true)
        .handle(0x6777)
        .priority(0x6777);
    let mut hook = builder.hook(if egress { TC_EGRESS } else { TC_INGRESS });
    hook.attach().context("attaching tc filter")?;
    Ok(Attachment::Clsact(hook))
}

/// Attach ingress (and egress, except on loopback where every packet passes
/// both and would be reported twice) to one interface.
pub fn attach_iface(
    ingress: &Program,
    egress: &Program,
    iface: &str,
    mode: AttachMode,
) -> Result<IfaceAttachment> {
    let index = ifindex(iface)?;
    let directions: &[bool] = if is_loopback(iface) {
        &[false]
    } else {
        &[false, true]
    };
    let mut parts = Vec::new();
    let mut used = "tcx";
    let mut created_qdisc = false;
    for &egress_dir in directions {
        let prog = if egress_dir { egress } else { ingress };
        let dir = if egress_dir { "egress" } else { "ingress" };
        let part = match mode {
            AttachMode::Tcx => Attachment::Tcx(
                attach_tcx(prog, index, egress_dir)
                    .with_context(|| format!("attaching tcx {dir} to {iface}"))?,
            ),
            AttachMode::Clsact => {
                if used != "clsact" {
                    created_qdisc = ensure_clsact(index).with_context(|| format!("on {iface}"))?;
                }
                used = "clsact";
                attach_clsact(prog, index, egress_dir)
                    .with_context(|| format!("attaching tc clsact {dir} to {iface}"))?
            }
            AttachMode::Auto => match attach_tcx(prog, index, egress_dir) {
                Ok(link) => Attachment::Tcx(link),
                Err(e) => {
                    tracing::info!(%iface, "tcx unavailable ({e:#}); using a clsact qdisc");
                    if used != "clsact" {
                        created_qdisc =
                            ensure_clsact(index).with_context(|| format!("on {iface}"))?;
                    }
                    used = "clsact";
                    attach_clsact(prog, index, egress_dir)
                        .with_context(|| format!("attaching tc clsact {dir} to {iface}"))?
                }
            },
        };
        parts.push(part);
    }
    tracing::info!(%iface, ifindex = index, mode = used, "attached");
    Ok(IfaceAttachment {
        iface: iface.to_string(),
        ifindex: index,
        mode: used,
        parts,
        created_qdisc,
    })
}
