//! The command line: the entry point shared by the `wasmhost` binary and the
//! test crate, which parses arguments (`args.rs`), sets up logging and the
//! runtime, and runs `serve` or one of the admin API's client commands
//! (`commands.rs`, through `client.rs`).

use std::process::ExitCode;

use clap::Parser as _;

pub(crate) mod args;
pub(crate) mod client;
pub(crate) mod commands;

use args::{Cli, Command, ServeArgs};

/// Runs the command line in `std::env::args` and returns the process exit code.
/// Errors are printed once, as one line with their whole chain.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(&args, cli.log_format),
        Command::Deploy(args) => client_command(commands::deploy(args)),
        Command::Status(args) => client_command(commands::status(args)),
        Command::Reload(args) => client_command(commands::change(args, "reload")),
        Command::Rollback(args) => client_command(commands::change(args, "rollback")),
        Command::Rm(args) => client_command(commands::remove(args)),
        Command::Push(args) => client_command(commands::push(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::telemetry::announce(cli.log_format, "ERROR", &format!("error: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

fn client_command(
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    crate::runtime::build()
        .map_err(|err| anyhow::anyhow!("failed to start the async runtime: {err}"))?
        .block_on(command)
}

fn serve(args: &ServeArgs, log_format: crate::telemetry::LogFormat) -> anyhow::Result<()> {
    let mut config = args.config()?;
    config.log_format = log_format;
    let runtime = crate::runtime::build()
        .map_err(|err| anyhow::anyhow!("failed to start the async runtime: {err}"))?;
    runtime.block_on(async {
        let listeners = crate::serve::Listeners::bind(&config).await?;
        crate::serve::run(config, listeners, crate::shutdown::signal()).await
    })
}
