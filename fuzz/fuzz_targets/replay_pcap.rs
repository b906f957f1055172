//! `gatewatch replay` on arbitrary bytes, up to the kernel: the pcap and
//! pcapng readers, the link-type conversion to Ethernet and the
//! re-segmentation of oversized TCP frames. Any panic (an unchecked length,
//! an out-of-range slice) is a crash; a broken file must give an error or
//! counted skips. The kernel parser behind it is exercised by
//! sensor/tests/kernel_parser.rs (garbage, differential corpus).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((frames, stats)) = gatewatch::capture::replay::parse_capture(data) {
        // What test_run would be given: never more than its limit.
        assert!(frames.iter().all(|f| f.len() <= 3000));
        assert!(stats.packets >= frames.len() as u64 || stats.resegmented > 0);
    }
});
