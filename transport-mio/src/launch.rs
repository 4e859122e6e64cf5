//! Who a process is in its cluster and where its peers listen, read the way launchers
//! say it: torchrun (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), Slurm
//! (`SLURM_PROCID`, `SLURM_NTASKS`) and Open MPI (`OMPI_COMM_WORLD_RANK`,
//! `OMPI_COMM_WORLD_SIZE`). The `asap` command and the Python package both start
//! members this way, so a cluster launched by either finds itself the same way.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use asap_core::Key;

use crate::member::Identity;

/// The port worker 0 listens on when neither the caller nor `MASTER_PORT` names one.
pub const DEFAULT_BASE_PORT: u16 = 47_000;

/// Rank and world size: the caller's, else the launcher's environment variables.
/// Errors are one line, naming what was looked for.
pub fn rank_and_world(rank: Option<u32>, world: Option<u32>) -> Result<(u32, u32), String> {
    rank_and_world_from(rank, world, |name| std::env::var(name).ok())
}

/// [`rank_and_world`] over any variable lookup (tests pass a map).
pub fn rank_and_world_from(
    rank: Option<u32>,
    world: Option<u32>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(u32, u32), String> {
    let from_env = |names: &[&str]| {
        names.iter().find_map(|&n| var(n).map(|v| (n, v))).map(|(n, v)| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{n}={v}: not a whole number"))
        })
    };
    let rank = match rank {
        Some(r) => r,
        None => from_env(&["RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"])
            .ok_or("no rank given (nor RANK, SLURM_PROCID, OMPI_COMM_WORLD_RANK)")??,
    };
    let world = match world {
        Some(w) => w,
        None => from_env(&["WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"])
            .ok_or("no world size given (nor WORLD_SIZE, SLURM_NTASKS, OMPI_COMM_WORLD_SIZE)")??,
    };
    if world < 2 {
        return Err(format!("world size {world}: need at least 2 workers"));
    }
    if rank >= world {
        return Err(format!("rank {rank} is not below world size {world}"));
    }
    Ok((rank, world))
}

/// Where every member listens, by rank, on one host: worker `r` at `host:(base_port + r)`.
/// `host` defaults to `MASTER_ADDR`, else 127.0.0.1; `base_port` to `MASTER_PORT + 1`
/// (torchrun's rendezvous port is taken), else [`DEFAULT_BASE_PORT`].
pub fn consecutive_ports(host: Option<&str>, base_port: Option<u16>, world: u32) -> Result<Vec<SocketAddr>, String> {
    consecutive_ports_from(host, base_port, world, |name| std::env::var(name).ok())
}

/// [`consecutive_ports`] over any variable lookup (tests pass a map).
pub fn consecutive_ports_from(
    host: Option<&str>,
    base_port: Option<u16>,
    world: u32,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<SocketAddr>, String> {
    let host = host
        .map(str::to_string)
        .or_else(|| var("MASTER_ADDR"))
        .unwrap_or_else(|| "127.0.0.1".into());
    let base_port = match (base_port, var("MASTER_PORT")) {
        (Some(p), _) => p,
        (None, Some(p)) => p
            .trim()
            .parse::<u16>()
            .ok()
            .and_then(|p| p.checked_add(1))
            .ok_or(format!("MASTER_PORT={p}: not a port below 65535"))?,
        (None, None) => DEFAULT_BASE_PORT,
    };
    (0..world)
        .map(|r| {
            let port = u16::try_from(u32::from(base_port) + r)
                .map_err(|_| format!("base port {base_port} + rank {r} exceeds 65535"))?;
            resolve(&format!("{host}:{port}"))
        })
        .collect()
}

/// Addresses from a hosts file's text: one `HOST:PORT` a line in rank order, `#`
/// starting a comment. `name` is how errors call the file.
pub fn parse_hosts(text: &str, world: u32, name: &str) -> Result<Vec<SocketAddr>, String> {
    let hosts: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    if hosts.len() != world as usize {
        return Err(format!("{name} lists {} addresses for a world of {world}", hosts.len()));
    }
    hosts.iter().map(|h| resolve(h)).collect()
}

/// The cluster key from `file`, else the file `ASAP_KEY_FILE` names, else the 64 hex
/// digits of `ASAP_KEY` (never a command line: it would show in `ps`); `None`: frames
/// are CRC-protected only.
pub fn cluster_key(file: Option<&Path>) -> Result<Option<asap_core::Key>, String> {
    let read =
        |path: &std::path::Path| std::fs::read_to_string(path).map_err(|e| format!("key file {}: {e}", path.display()));
    let (text, source) = match (file, std::env::var_os("ASAP_KEY_FILE"), std::env::var("ASAP_KEY")) {
        (Some(path), _, _) => (read(path)?, path.display().to_string()),
        (None, Some(path), _) => (read(path.as_ref())?, "ASAP_KEY_FILE".into()),
        (None, None, Ok(hex)) => (hex, "ASAP_KEY".into()),
        (None, None, Err(_)) => return Ok(None),
    };
    asap_core::Key::from_hex(&text)
        .map(Some)
        .map_err(|e| format!("key from {source}: {e}"))
}

/// An incarnation no earlier start of a member on this machine had: tenths of a second
/// since 2025-01-01 UTC (good until 2038), after waiting for that tenth to pass, so a
/// process restarted at once still gets a larger one. Costs at most 100 ms at start.
pub fn fresh_incarnation() -> u32 {
    const EPOCH_2025: u64 = 1_735_689_600;
    let tenths = |t: std::time::SystemTime| {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (since.as_millis() / 100).saturating_sub(u128::from(EPOCH_2025) * 10)
    };
    let mine = tenths(std::time::SystemTime::now());
    while tenths(std::time::SystemTime::now()) == mine {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    u32::try_from(mine).unwrap_or(u32::MAX).max(1)
}

/// One member of a membership file: its node id (its rank), its public key and where it
/// listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Node id, 0..members.
    pub id: u16,
    /// Its static X25519 public key (`asap keygen --node` prints it).
    pub public: asap_core::PublicKey,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A membership file's text: one member a line, `ID PUBLIC_KEY HOST:PORT` (the key in 64
/// hexadecimal digits), `#` starting a comment; ids 0..n, each once, in any order.
/// Returned in id order. `name` is how errors call the file.
pub fn parse_membership(text: &str, name: &str) -> Result<Vec<Listed>, String> {
    let mut listed = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let here = || format!("{name} line {}", at + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, public, addr] = fields[..] else {
            return Err(format!("{}: expected `ID PUBLIC_KEY HOST:PORT`, got `{line}`", here()));
        };
        let id: u16 = id
            .parse()
            .map_err(|_| format!("{}: node id `{id}` is not a number below 65536", here()))?;
        let public = asap_core::PublicKey::from_hex(public).map_err(|e| format!("{}: public key: {e}", here()))?;
        let addr = resolve(addr).map_err(|e| format!("{}: {e}", here()))?;
        listed.push(Listed { id, public, addr });
    }
    listed.sort_by_key(|l| l.id);
    for (expected, l) in listed.iter().enumerate() {
        match usize::from(l.id).cmp(&expected) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Less => return Err(format!("{name}: node id {} is listed twice", l.id)),
            std::cmp::Ordering::Greater => {
                return Err(format!(
                    "{name}: node id {expected} is missing (ids run from 0, each once)"
                ))
            }
        }
    }
    if listed.len() < 2 {
        return Err(format!("{name} lists {} members: need at least 2", listed.len()));
    }
    Ok(listed)
}

/// This member's static secret from `file`, else the file `ASAP_NODE_KEY_FILE` names
/// (64 hex digits, as `asap keygen --node` writes them).
pub fn node_secret(file: Option<&Path>) -> Result<Option<asap_core::NodeSecret>, String> {
    let path = match (file, std::env::var_os("ASAP_NODE_KEY_FILE")) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => std::path::PathBuf::from(p),
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("node key file {}: {e}", path.display()))?;
    asap_core::NodeSecret::from_hex(&text)
        .map(Some)
        .map_err(|e| format!("node key file {}: {e}", path.display()))
}

/// 32 fresh bytes from the operating system's CSPRNG: a new cluster key or node secret.
pub fn random_secret() -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the system: {e}"))?;
    Ok(bytes)
}

/// Lower-case hexadecimal, as key files hold keys.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a member was told where it stands, by flags (the command) or keywords (Python),
/// each `None` or empty when not given: launchers' variables fill in the rest.
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement<'a> {
    /// This member's rank.
    pub rank: Option<u32>,
    /// Members in the cluster.
    pub world: Option<u32>,
    /// Every member's `HOST:PORT`, in rank order.
    pub peers: &'a [String],
    /// A hosts file: one `HOST:PORT` a line, in rank order.
    pub hosts: Option<&'a Path>,
    /// A membership file (per-node identities; [`parse_membership`]): ids, public keys
    /// and addresses.
    pub members: Option<&'a Path>,
    /// With `members`: this member's secret (else `ASAP_NODE_KEY_FILE`).
    pub node_key: Option<&'a Path>,
    /// The cluster key's file (else `ASAP_KEY_FILE` or `ASAP_KEY`).
    pub key_file: Option<&'a Path>,
    /// Without peers, hosts or members: the host all members listen on.
    pub host: Option<&'a str>,
    /// ... and the port of rank 0.
    pub base_port: Option<u16>,
}

/// Where a member stands, as [`locate`] worked it out.
#[derive(Debug)]
pub struct Located {
    /// This member's rank.
    pub rank: u32,
    /// Every member's address, by rank.
    pub peers: Vec<SocketAddr>,
    /// The cluster key, if the cluster has one.
    pub key: Option<Key>,
    /// Per-node identities, if the cluster lists its members' keys.
    pub identity: Option<Arc<Identity>>,
}

/// Rank, peers and keys from what the member was told and from its launcher's
/// variables: the membership file's addresses, else a hosts file's, else `peers`,
/// else consecutive ports on one host. Errors are one line, naming the option.
pub fn locate(p: &Placement<'_>) -> Result<Located, String> {
    let listed = match p.members {
        None => None,
        Some(path) => {
            if !p.peers.is_empty() || p.hosts.is_some() {
                return Err("members lists the addresses: give members, or peers or hosts".into());
            }
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let listed = parse_membership(&text, &path.display().to_string())?;
            if let Some(w) = p.world.filter(|&w| w as usize != listed.len()) {
                return Err(format!(
                    "world {w}, but {} lists {} members",
                    path.display(),
                    listed.len()
                ));
            }
            Some(listed)
        }
    };
    let world = p.world.or(listed.as_ref().map(|l| l.len() as u32));
    let (rank, world) = rank_and_world(p.rank, world)?;
    let peers = match (&listed, p.hosts) {
        (Some(listed), _) => listed.iter().map(|l| l.addr).collect(),
        (None, Some(_)) if !p.peers.is_empty() => return Err("give peers or hosts, not both".into()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            parse_hosts(&text, world, &path.display().to_string())?
        }
        (None, None) if p.peers.is_empty() => consecutive_ports(p.host, p.base_port, world)?,
        (None, None) if p.peers.len() != world as usize => {
            return Err(format!(
                "peers lists {} addresses for a world of {world}",
                p.peers.len()
            ))
        }
        (None, None) => p.peers.iter().map(|a| resolve(a)).collect::<Result<_, _>>()?,
    };
    let key = cluster_key(p.key_file)?;
    let identity = match listed {
        None if p.node_key.is_some() => return Err("node key needs members (the membership file)".into()),
        None => None,
        Some(_) if key.is_some() => {
            return Err(
                "members (per-node keys) replace the cluster key: drop the key file (and ASAP_KEY_FILE, ASAP_KEY)"
                    .into(),
            )
        }
        Some(listed) => {
            let secret = node_secret(p.node_key)?
                .ok_or("members needs this node's secret: a node key file or ASAP_NODE_KEY_FILE")?;
            Some(Arc::new(Identity {
                secret,
                members: listed.iter().map(|l| l.public).collect(),
            }))
        }
    };
    Ok(Located {
        rank,
        peers,
        key,
        identity,
    })
}

/// Writes a new node secret (from the system's CSPRNG, 64 hex digits) to `path`, which
/// must not exist yet (owner-only on Unix), and returns its public key, for the
/// membership file.
pub fn write_node_secret(path: &Path) -> Result<asap_core::PublicKey, String> {
    use std::io::Write;
    let bytes = random_secret()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{}", hex(&bytes)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(asap_core::NodeSecret::new(bytes).public_key())
}

/// One address, resolved (the first the resolver gives).
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("address {addr}: {e}"))?
        .next()
        .ok_or(format!("address {addr}: nothing to connect to"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn arguments_win_over_the_environment() {
        let env = vars(&[("RANK", "3"), ("WORLD_SIZE", "8")]);
        assert_eq!(rank_and_world_from(Some(1), None, &env), Ok((1, 8)));
        assert_eq!(rank_and_world_from(None, None, &env), Ok((3, 8)));
    }

    #[test]
    fn each_launcher_is_read() {
        let slurm = vars(&[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "4")]);
        assert_eq!(rank_and_world_from(None, None, slurm), Ok((2, 4)));
        let mpi = vars(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]);
        assert_eq!(rank_and_world_from(None, None, mpi), Ok((0, 2)));
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let none = vars(&[]);
        assert!(rank_and_world_from(None, Some(4), &none).unwrap_err().contains("RANK"));
        let bad = vars(&[("RANK", "x"), ("WORLD_SIZE", "4")]);
        assert_eq!(
            rank_and_world_from(None, None, bad).unwrap_err(),
            "RANK=x: not a whole number"
        );
        assert!(rank_and_world_from(Some(4), Some(4), &none)
            .unwrap_err()
            .contains("not below"));
        assert!(rank_and_world_from(Some(0), Some(1), &none)
            .unwrap_err()
            .contains("at least 2"));
    }

    #[test]
    fn ports_follow_torchrun_rendezvous() {
        let env = vars(&[("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")]);
        let addrs = consecutive_ports_from(None, None, 3, &env).unwrap();
        let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [29501, 29502, 29503]);
        let own = consecutive_ports_from(Some("127.0.0.1"), Some(9000), 2, &env).unwrap();
        assert_eq!(own[1].port(), 9001);
        let none = vars(&[]);
        assert_eq!(
            consecutive_ports_from(None, None, 2, &none).unwrap()[0].port(),
            DEFAULT_BASE_PORT
        );
        assert!(consecutive_ports_from(None, Some(65535), 2, &none).is_err());
        let bad = vars(&[("MASTER_PORT", "65535")]);
        assert!(consecutive_ports_from(None, None, 2, bad)
            .unwrap_err()
            .contains("MASTER_PORT"));
    }

    #[test]
    fn membership_files_list_every_id_once() {
        let key = |b: u8| asap_core::NodeSecret::new([b; 32]).public_key();
        let text = format!(
            "# id key address\n1 {} 127.0.0.1:7001\n0 {} 127.0.0.1:7000 # first\n",
            key(2),
            key(1)
        );
        let listed = parse_membership(&text, "members").unwrap();
        assert_eq!(listed[0].id, 0);
        assert_eq!(listed[1].public, key(2));
        assert_eq!(listed[1].addr.port(), 7001);
        let twice = format!("0 {} 127.0.0.1:7000\n0 {} 127.0.0.1:7001\n", key(1), key(2));
        assert!(parse_membership(&twice, "m").unwrap_err().contains("listed twice"));
        let gap = format!("0 {} 127.0.0.1:7000\n2 {} 127.0.0.1:7001\n", key(1), key(2));
        assert!(parse_membership(&gap, "m")
            .unwrap_err()
            .contains("node id 1 is missing"));
        assert!(parse_membership("0 abc 127.0.0.1:1\n", "m")
            .unwrap_err()
            .contains("m line 1: public key"));
        assert!(parse_membership("0 127.0.0.1:1\n", "m")
            .unwrap_err()
            .contains("expected"));
        assert!(parse_membership(&format!("0 {} 127.0.0.1:7000\n", key(1)), "m")
            .unwrap_err()
            .contains("at least 2"));
    }

    #[test]
    fn locate_takes_one_source_of_addresses_and_says_what_conflicts() {
        let peers = ["127.0.0.1:7000".to_string(), "127.0.0.1:7001".to_string()];
        let given = Placement {
            rank: Some(1),
            world: Some(2),
            peers: &peers,
            ..Placement::default()
        };
        let located = locate(&given).unwrap();
        assert_eq!((located.rank, located.peers[1].port()), (1, 7001));
        assert!(located.identity.is_none());
        let short = Placement {
            world: Some(3),
            ..given
        };
        assert_eq!(locate(&short).unwrap_err(), "peers lists 2 addresses for a world of 3");
        let path = Path::new("hosts.txt");
        let both = Placement {
            hosts: Some(path),
            ..given
        };
        assert_eq!(locate(&both).unwrap_err(), "give peers or hosts, not both");
        let members = Placement {
            members: Some(path),
            ..given
        };
        assert!(locate(&members).unwrap_err().starts_with("members lists the addresses"));
        let key_alone = Placement {
            node_key: Some(path),
            ..given
        };
        assert!(locate(&key_alone).unwrap_err().contains("needs members"));
    }

    #[test]
    fn hosts_files_have_one_address_a_rank() {
        let text = "# cluster\n127.0.0.1:7000\n\n127.0.0.1:7001 # second\n";
        assert_eq!(parse_hosts(text, 2, "hosts").unwrap()[1].port(), 7001);
        assert!(parse_hosts(text, 3, "hosts").unwrap_err().contains("lists 2 addresses"));
    }
}
