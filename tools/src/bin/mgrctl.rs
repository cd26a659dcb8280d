//! `mgrctl`: talk to a running libmgr server (`mgrd` or any host that embeds one).

use std::process::ExitCode;
use std::time::Instant;

use mgr::server::ServerStats;
use mgr::Manager;

const USAGE: &str = "\
usage: mgrctl --address ADDR COMMAND [--json]

Commands:
  ping                 check the server answers; prints the round trip
  objects              print the number of live shared objects
  debug-info           print the server's description of its objects
  segments             list the shared-memory segments it tracks
  stats                print the server's counters, one `name value` a line
                       (`objects_by_type.TYPEID N` for each typeid); with
                       --json, one JSON object
  shutdown             ask the server to shut down

ADDR is host:port or unix:/path. The authkey is read from MGR_AUTHKEY (unset
means an empty key, as mgrd uses when it has none).
Empty listings (debug-info, segments) print nothing on stdout and say so on stderr.
Exit status: 0 on success, 1 if the server cannot be reached or refuses, 2 on
bad usage.";

/// What the command line asked for.
struct Args {
    address: String,
    command: String,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let mut address = None;
    let mut command = None;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" => {
                println!("mgrctl {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--address" => address = Some(args.next().ok_or("--address needs a value")?),
            "--json" => json = true,
            a if a.starts_with("--address=") => address = Some(a["--address=".len()..].to_owned()),
            a if a.starts_with('-') => return Err(format!("unknown option '{a}'")),
            a if command.is_none() => command = Some(a.to_owned()),
            a => return Err(format!("unexpected argument '{a}'")),
        }
    }
    Ok(Args {
        address: address.ok_or("--address is required")?,
        command: command.ok_or("a command is required")?,
        json,
    })
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The stats as text (`name value` lines) or one JSON object.
fn render_stats(s: &ServerStats, json: bool) -> String {
    if json {
        let mut fields: Vec<String> = s
            .counters()
            .into_iter()
            .map(|(k, v)| format!("{}: {v}", json_string(k)))
            .collect();
        let by_type: Vec<String> = s
            .objects_by_type
            .iter()
            .map(|(t, n)| format!("{}: {n}", json_string(t)))
            .collect();
        fields.push(format!("\"objects_by_type\": {{{}}}", by_type.join(", ")));
        format!("{{{}}}\n", fields.join(", "))
    } else {
        let mut out = String::new();
        for (k, v) in s.counters() {
            out.push_str(&format!("{k} {v}\n"));
        }
        for (t, n) in &s.objects_by_type {
            out.push_str(&format!("objects_by_type.{t} {n}\n"));
        }
        out
    }
}

fn run(address: &str, command: &str, json: bool) -> Result<(), String> {
    let key = std::env::var_os("MGR_AUTHKEY").map(std::os::unix::ffi::OsStringExt::into_vec);
    let m = Manager::connect(address, key.as_deref().unwrap_or_default()).map_err(|e| {
        let hint = match (&e, &key) {
            (mgr::Error::Auth(_), None) => {
                "\nhint: MGR_AUTHKEY is not set, so mgrctl used an empty key; \
                 set it to the server's key (MGR_AUTHKEY=... mgrctl ...)"
            }
            _ => "",
        };
        format!("{address}: {e}{hint}")
    })?;
    match command {
        "ping" => {
            let started = Instant::now();
            m.public("dummy", vec![]).map_err(|e| e.to_string())?;
            println!(
                "pong from {address} in {} us",
                started.elapsed().as_micros()
            );
        }
        "objects" => println!("{}", m.number_of_objects().map_err(|e| e.to_string())?),
        "debug-info" => {
            let info = m.debug_info().map_err(|e| e.to_string())?;
            if info.is_empty() {
                eprintln!("mgrctl: {address} holds no shared objects");
            } else {
                // Entries are joined by newlines, as CPython's debug_info.
                println!("{}", info.trim_end_matches('\n'));
            }
        }
        "segments" => {
            let names = m.list_segments().map_err(|e| e.to_string())?;
            if names.is_empty() {
                eprintln!("mgrctl: {address} tracks no shared-memory segments");
            }
            for name in names {
                println!("{name}");
            }
        }
        "stats" => {
            let v = m.public("stats", vec![]).map_err(|e| e.to_string())?;
            let stats = ServerStats::from_value(&v)?;
            print!("{}", render_stats(&stats, json));
        }
        "shutdown" => {
            m.shutdown().map_err(|e| e.to_string())?;
            println!("{address}: shutting down");
        }
        other => unreachable!("checked by main: {other}"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let Args {
        address,
        command,
        json,
    } = match parse() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mgrctl: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if ![
        "ping",
        "objects",
        "debug-info",
        "segments",
        "stats",
        "shutdown",
    ]
    .contains(&command.as_str())
    {
        eprintln!("mgrctl: unknown command '{command}'\n\n{USAGE}");
        return ExitCode::from(2);
    }
    if json && command != "stats" {
        eprintln!("mgrctl: --json applies to stats only\n\n{USAGE}");
        return ExitCode::from(2);
    }
    match run(&address, &command, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mgrctl: {e}");
            ExitCode::FAILURE
        }
    }
}
