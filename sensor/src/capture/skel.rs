//! The generated skeleton of `bpf/net.bpf.c`.
#![allow(
    clippy::all,
    clippy::pedantic,
    unused,
    non_camel_case_types,
    non_snake_case
)]
include!(concat!(env!("OUT_DIR"), "/net.skel.rs"));
