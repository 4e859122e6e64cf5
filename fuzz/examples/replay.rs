//! Runs one input through a target body: `cargo run --example replay TARGET FILE`
//! (a dev build: debug assertions on, as in the fuzz build). With `ASAP_FUZZ_TRACE=1` it
//! prints the structured input first, and `pair` prints every step.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: replay TARGET FILE");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&file).expect("read the input");
    let run: fn(&[u8]) = match target.as_str() {
        "decode" => asap_fuzz::decode::run,
        "keyed" => asap_fuzz::keyed::run,
        "node_frames" => asap_fuzz::node_frames::run,
        "topology" => asap_fuzz::topology::run,
        "reduce" => asap_fuzz::reduce::run,
        "codec" => asap_fuzz::codec::run,
        "pair" => asap_fuzz::pair::run,
        other => {
            eprintln!("no target {other}");
            std::process::exit(2);
        }
    };
    if std::env::var_os("ASAP_FUZZ_TRACE").is_some() {
        print_input(&target, &bytes);
    }
    run(&bytes);
    eprintln!("{target}: {file}: ok");
}

/// The structured input the target decodes from `bytes`.
fn print_input(target: &str, bytes: &[u8]) {
    use arbitrary::{Arbitrary, Unstructured};
    let u = Unstructured::new(bytes);
    match target {
        "node_frames" => {
            if let Ok(ops) = Vec::<asap_fuzz::node_frames::Op>::arbitrary_take_rest(u) {
                eprintln!("{ops:#?}");
            }
        }
        "topology" => eprintln!("{:#?}", asap_fuzz::topology::Input::arbitrary_take_rest(u)),
        "reduce" => eprintln!("{:#?}", asap_fuzz::reduce::Input::arbitrary_take_rest(u)),
        _ => {}
    }
}
