#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| asap_fuzz::codec::run(data));
