//! The `resk-server` binary: `serve` (default), `token`, `calibrate`, `keygen`, `reencrypt`.

use std::process::ExitCode;

use clap::Parser;
use resk_server::{
    Cli, Command,
    config::{CalibrateArgs, ServeArgs, TokenArgs},
    telemetry,
};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Token(args)) => token(&args),
        Some(Command::Calibrate(args)) => calibrate(&args),
        Some(Command::Keygen) => keygen(),
        Some(Command::Reencrypt(args)) => reencrypt(args),
    }
}

/// The multi-threaded runtime; `None` (after saying why) when the OS refuses threads.
fn runtime(command: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(err) => {
            eprintln!("{command}: cannot start the async runtime: {err}");
            None
        }
    }
}

/// The tracing subscriber (and trace exporter) for `args`; `Err` carries the exit code.
fn tracing_for(args: &ServeArgs, command: &str) -> Result<telemetry::TracingGuard, ExitCode> {
    telemetry::init_tracing(&args.log_level, args.log_format, &args.otel).map_err(|err| {
        eprintln!("{command}: configuration error: {err}");
        ExitCode::from(2)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    // Dropped last: the spans of the shutdown are exported too.
    let _tracing = match tracing_for(&args, "resk-server") {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let config = match args.resolve() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("resk-server: configuration error: {}", err.message());
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime("resk-server") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(resk_server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server stopped");
            eprintln!("resk-server: {}", err.message());
            // A backend that cannot be opened is a configuration problem, like a bad variable.
            if err.kind() == resk_core::ErrorKind::Config {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[allow(clippy::print_stdout)] // printing the report is this command's whole job
fn calibrate(args: &CalibrateArgs) -> ExitCode {
    if let Err(err) = args.semantic.validate() {
        eprintln!("resk-server calibrate: {}", err.message());
        return ExitCode::from(2);
    }
    let Some(runtime) = runtime("resk-server calibrate") else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let (embedder, verifiers) =
            resk::env::build_embedder_with_verifiers(&args.semantic).await?;
        let (calibration, mut report) =
            resk::calibrate::run(&embedder, &args.pairs, args.target_precision).await?;
        if !verifiers.is_empty() {
            let current = resk::calibrate::Zones {
                threshold: args.semantic.threshold(),
                accept: args.semantic.accept(),
            };
            let (_, verified) = resk::calibrate::run_verified(
                &embedder,
                &verifiers,
                &args.pairs,
                args.target_precision,
                current,
            )
            .await?;
            report.push_str(&verified);
        }
        Ok::<_, resk::Error>((calibration, report))
    });
    match result {
        Ok((calibration, report)) => {
            print!("{report}");
            if calibration.threshold.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("resk-server calibrate: {}", err.message());
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)] // printing the token is this command's whole job
fn token(args: &TokenArgs) -> ExitCode {
    let jwt = match args.jwt.resolve() {
        Ok(jwt) => jwt,
        Err(err) => {
            eprintln!("resk-server token: {}", err.message());
            return ExitCode::from(2);
        }
    };
    match resk_server::auth::mint(
        &jwt,
        &args.sub,
        &args.scope,
        args.tenant.as_deref(),
        args.ttl,
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("resk-server token: {}", err.message());
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)] // printing the report is this command's whole job
fn reencrypt(args: ServeArgs) -> ExitCode {
    let _tracing = match tracing_for(&args, "reencrypt") {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let config = match args.resolve() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("reencrypt: configuration error: {}", err.message());
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime("reencrypt") else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(resk_server::rekey::reencrypt(&config)) {
        Ok(report) => {
            println!(
                "re-encrypted {} values under the current key; {} changed meanwhile and left as written; \
                 {} could not be opened by any configured key and were left as they are",
                report.rewritten, report.changed_meanwhile, report.unreadable
            );
            if report.unreadable == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "reencrypt: {} values open under none of the configured keys; keep the key that \
                     sealed them (or accept their loss) before dropping a previous key",
                    report.unreadable
                );
                ExitCode::from(resk_server::rekey::EXIT_UNREADABLE)
            }
        }
        Err(err) => {
            eprintln!("reencrypt: {}", err.message());
            if err.kind() == resk_core::ErrorKind::Config {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[allow(clippy::print_stdout)] // printing the key is this command's whole job
fn keygen() -> ExitCode {
    println!("{}", resk_crypto::MasterKey::generate_base64().as_str());
    ExitCode::SUCCESS
}
