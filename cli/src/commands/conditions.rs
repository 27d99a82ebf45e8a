//! `ferry conditions`: the network and power conditions detected, and the
//! default policy's verdict on them now for a few kinds of download.

use std::process::ExitCode;

use transfer_core::{Constraints, Demand, Load, Policy, Priority, Timestamp};

use crate::args::Sensing;
use crate::output::print_lines;

/// Prints the conditions and, for kinds of task, the default policy's
/// verdict on them now.
pub(crate) async fn conditions(sensing: &Sensing) -> anyhow::Result<ExitCode> {
    let config = sensing.config();
    // NetworkManager answers in milliseconds when it is there.
    let c = scheduler::conditions::read_now(&config, std::time::Duration::from_secs(1)).await;
    let mut lines = vec![format!("network: {}", c.network)];
    lines.push(format!("power: {}", c.power));
    lines.push("with the default policy:".to_owned());
    let policy = Policy::default();
    let constraints = Constraints::default();
    let kinds = [
        ("a download", Priority::DEFAULT, constraints),
        ("a high-priority download", Priority::HIGH, constraints),
        (
            "a discretionary download",
            Priority::DEFAULT,
            Constraints {
                discretionary: true,
                ..constraints
            },
        ),
        (
            "a download that requires charging",
            Priority::DEFAULT,
            Constraints {
                requires_charging: true,
                ..constraints
            },
        ),
        (
            "a download that requires an unmetered network",
            Priority::DEFAULT,
            Constraints {
                requires_unmetered: true,
                ..constraints
            },
        ),
    ];
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    for (what, priority, constraints) in kinds {
        let demand = Demand {
            priority,
            constraints,
            earliest_begin: None,
            max_rate: None,
            local: false,
        };
        let verdict = policy.admit(&demand, &c, Load::default(), now);
        lines.push(format!("  {what}: {verdict}"));
    }
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}
