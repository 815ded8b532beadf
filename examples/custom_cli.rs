//! A program of one's own with every `dgym` command: the registry of the built-in
//! components plus the agent of examples/custom_agent.rs under the name
//! `plain_reinforce`, with its config section `[plain_reinforce]`. `train`, `--resume`,
//! `sample`, `energy`, `eval`, `sweep` (whose runs are this program again) and
//! `aggregate` all work for it, and `config` documents its section.
//!
//! ```sh
//! cargo run --release -p denoise-gym-experiments --example custom_cli -- config --set finetune.agent=plain_reinforce
//! cargo run --release -p denoise-gym-experiments --example custom_cli -- train my.toml --set finetune.agent=plain_reinforce
//! cargo run --release -p denoise-gym-experiments --example custom_cli -- sweep my-sweep.toml
//! ```

use std::process::ExitCode;

use denoise_gym_experiments::{builtin, cli};

#[path = "custom_agent.rs"]
#[allow(dead_code)]
mod custom_agent;

use custom_agent::{PlainReinforce, PlainReinforceConfig};

fn main() -> ExitCode {
    let registry = builtin::registry::<cli::Device>().and_then(|mut registry| {
        registry.agent_with_config(
            "plain_reinforce",
            "REINFORCE with a batch-mean baseline (examples/custom_agent.rs)",
            |ctx, config: PlainReinforceConfig| {
                Ok(Box::new(PlainReinforce::new(ctx.policy, &config)?))
            },
        )?;
        Ok(registry)
    });
    match registry {
        Ok(registry) => cli::main_with(registry),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
