//! Compiles the kernel programs under `bpf/` with clang and generates their
//! Rust skeletons (libbpf-cargo) into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["net", "tls"];

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest.join("..").join("bpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("gatewatch's BPF programs are not built for {other}"),
        Err(_) => "x86",
    };
    for name in PROGRAMS {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        let skel = out.join(format!("{name}.skel.rs"));
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([
                format!("-D__TARGET_ARCH_{arch}"),
                format!("-I{}", bpf_dir.display()),
                "-Wall".to_string(),
                "-Wno-unused-function".to_string(),
            ])
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    }
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        bpf_dir.join("include").display()
    );
    for entry in std::fs::read_dir(bpf_dir.join("include"))
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    for name in PROGRAMS {
        println!(
            "cargo:rerun-if-changed={}",
            bpf_dir.join(format!("{name}.bpf.c")).display()
        );
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=GATEWATCH_GIT_COMMIT={commit}");
    embed_rule_pack(&manifest.join("..").join("rules"), &out);
}

/// The default rule pack, built into the binary so `gatewatch run` works with
/// no files installed (used when the configured pack directory does not exist).
fn embed_rule_pack(rules: &std::path::Path, out: &std::path::Path) {
    fn walk(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if p.extension().is_some_and(|x| x == "rhai") {
                found.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(rules, &mut files);
    files.sort();
    let mut code = String::from("pub const EMBEDDED_RULES: &[(&str, &str)] = &[\n");
    for f in &files {
        let rel = f.strip_prefix(rules).unwrap_or(f).display().to_string();
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            f.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("embedded_rules.rs"), code).expect("writing embedded_rules.rs");
    println!("cargo:rerun-if-changed={}", rules.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}
