#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| asap_fuzz::keyed::run(data));
