//! `cargo xtask sim`: runs `scheduler::sim` seed by seed and prints the
//! first broken invariant with its seed, or a summary.

use anyhow::bail;

/// What to simulate.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Run seeds 0..N.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
    /// Replay this one seed (prints its trace digest).
    #[arg(long)]
    seed: Option<u64>,
    /// Random steps per seed before faults stop.
    #[arg(long, default_value_t = 400)]
    steps: u64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (0..args.seeds).collect(),
    };
    let mut total = scheduler::sim::Report::default();
    let started = std::time::Instant::now();
    for &seed in &seeds {
        match scheduler::sim::run(seed, args.steps) {
            Ok(r) => {
                if args.seed.is_some() {
                    println!("seed {seed}: trace digest {:016x}", r.digest);
                }
                total.add(&r);
            }
            Err(v) => bail!(
                "{v}\nreplay: cargo xtask sim --seed {seed} --steps {}",
                args.steps
            ),
        }
    }
    println!(
        "sim: {} seeds passed in {:.1} s (each alone and shared by two processes): {} steps, {} tasks, {} crashes, {} faults, {} completions, {} takeovers",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.steps,
        total.tasks,
        total.crashes,
        total.faults,
        total.completions,
        total.takeovers
    );
    Ok(())
}
