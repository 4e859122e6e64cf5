//! `--config FILE.toml` for the `asap` command: the file holds a subcommand's flags by
//! their long names (`topology = "expander"`, `degree = 4`, `peers = ["h1:7000", ...]`,
//! `json = true`), so a cluster shares one file and each worker adds only what differs
//! (`--rank`). Flags on the command line win over the file.
//!
//! The file is turned into flags before clap parses, so every value gets clap's checks
//! and messages; keys that are not flags of the subcommand are refused by name.

use std::ffi::OsString;

/// Replaces `--config FILE` (or `--config=FILE`) in `argv` (program, subcommand, flags)
/// by the flags the file sets that the command line does not.
pub fn expand(argv: Vec<OsString>, cli: &clap::Command) -> Result<Vec<OsString>, String> {
    let Some(sub_name) = argv.get(1).and_then(|s| s.to_str()) else {
        return Ok(argv);
    };
    let Some(sub) = cli.find_subcommand(sub_name) else {
        return Ok(argv);
    };
    let mut rest: Vec<OsString> = argv[2..].to_vec();
    let Some(at) = rest
        .iter()
        .position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(argv);
    };
    let flag = rest.remove(at).to_string_lossy().into_owned();
    let path = match flag.strip_prefix("--config=") {
        Some(p) => p.to_string(),
        None if at < rest.len() => rest.remove(at).to_string_lossy().into_owned(),
        None => return Err("--config needs a file".into()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{path}: {}", e.message()))?;
    let given: Vec<String> = rest
        .iter()
        .filter_map(|a| {
            a.to_str()?
                .strip_prefix("--")
                .map(|f| f.split('=').next().unwrap_or(f).to_string())
        })
        .collect();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let known = sub
            .get_arguments()
            .any(|a| a.get_long() == Some(long.as_str()) && long != "config");
        if !known {
            return Err(format!("{path}: `{key}` is not a flag of `asap {sub_name}`"));
        }
        if given.contains(&long) {
            continue;
        }
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            _ => Err(format!(
                "{path}: `{key}` must be a string, a number, true/false or a list"
            )),
        };
        match value {
            toml::Value::Boolean(true) => flags.push(OsString::from(format!("--{long}"))),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let items: Vec<String> = items.iter().map(scalar).collect::<Result<_, _>>()?;
                flags.push(OsString::from(format!("--{long}={}", items.join(","))));
            }
            v => flags.push(OsString::from(format!("--{long}={}", scalar(v)?))),
        }
    }
    Ok(argv[..2].iter().cloned().chain(flags).chain(rest).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> clap::Command {
        clap::Command::new("asap").subcommand(
            clap::Command::new("node")
                .arg(Arg::new("config").long("config"))
                .arg(Arg::new("rank").long("rank"))
                .arg(Arg::new("topology").long("topology"))
                .arg(Arg::new("peers").long("peers"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue))
                .arg(Arg::new("compute-ms").long("compute-ms")),
        )
    }

    fn run(file: &str, args: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let path = path.to_str().unwrap().to_string();
        let argv = args.iter().map(|a| OsString::from(a.replace("FILE", &path))).collect();
        expand(argv, &cli()).map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn the_file_gives_flags_and_the_command_line_wins() {
        let file = "topology = \"expander\"\npeers = [\"a:1\", \"b:2\"]\njson = true\ncompute_ms = 2.5\nrank = 0\n";
        let got = run(file, &["asap", "node", "--config", "FILE", "--rank", "3"]).unwrap();
        assert_eq!(
            got,
            [
                "asap",
                "node",
                "--compute-ms=2.5",
                "--json",
                "--peers=a:1,b:2",
                "--topology=expander",
                "--rank",
                "3"
            ]
        );
        let got = run(
            "topology = \"ring\"\n",
            &["asap", "node", "--config=FILE", "--topology=exp"],
        )
        .unwrap();
        assert_eq!(got, ["asap", "node", "--topology=exp"]);
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let e = run("colour = \"blue\"\n", &["asap", "node", "--config", "FILE"]).unwrap_err();
        assert!(e.contains("`colour` is not a flag of `asap node`"), "{e}");
        let e = run("rank = \n", &["asap", "node", "--config", "FILE"]).unwrap_err();
        assert!(e.contains("c.toml"), "{e}");
        let e = run("rank = { a = 1 }\n", &["asap", "node", "--config", "FILE"]).unwrap_err();
        assert!(e.contains("must be"), "{e}");
        let e = run("", &["asap", "node", "--config"]).unwrap_err();
        assert!(e.contains("needs a file"), "{e}");
        let e = expand(
            vec![
                "asap".into(),
                "node".into(),
                "--config".into(),
                "/nonexistent.toml".into(),
            ],
            &cli(),
        );
        assert!(e.unwrap_err().contains("/nonexistent.toml"));
    }
}
