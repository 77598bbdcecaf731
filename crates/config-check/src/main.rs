//! `config-check [FILE ...]`: runs each plugin configuration (JSON; `-` or no argument reads
//! standard input) through `persist_core::config::Config::parse`, the parser the filter's
//! `on_configure` uses. Prints `ok: <source>` or `<source>: invalid configuration: <field>: <reason>`
//! per input; exits 1 when any input is refused, 2 when an input cannot be read.

use std::io::Read;
use std::process::ExitCode;

use persist_core::config::Config;

fn read(source: &str) -> std::io::Result<Vec<u8>> {
    if source == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(source)
    }
}

fn main() -> ExitCode {
    let mut sources: Vec<String> = std::env::args().skip(1).collect();
    if sources.is_empty() {
        sources.push("-".to_string());
    }
    let mut code = ExitCode::SUCCESS;
    for source in &sources {
        let name = if source == "-" {
            "<stdin>"
        } else {
            source.as_str()
        };
        match read(source) {
            Err(e) => {
                eprintln!("{name}: cannot read: {e}");
                return ExitCode::from(2);
            }
            Ok(bytes) => match Config::parse(&bytes) {
                Ok(_) => println!("ok: {name}"),
                Err(e) => {
                    eprintln!("{name}: {e}");
                    code = ExitCode::from(1);
                }
            },
        }
    }
    code
}
