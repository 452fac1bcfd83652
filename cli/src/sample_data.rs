//! `vesper sample-data`.

use anyhow::Context;
use clap::Args;
use vesper_datasource::DEFAULT_SEED;
use vesper_storage::LakeArgs;

/// Write the analytics' sample CSVs into a lake.
#[derive(Debug, Args)]
pub(crate) struct SampleDataCommand {
    #[command(flatten)]
    lake: LakeArgs,

    /// Seed of the data; the same seed always writes the same bytes.
    #[arg(long, env = "VESPER_SEED", default_value_t = DEFAULT_SEED, value_name = "N")]
    seed: u64,

    /// Leave the lake alone when all three files are already there.
    #[arg(long, env = "VESPER_SAMPLE_DATA_IF_MISSING")]
    if_missing: bool,
}

impl SampleDataCommand {
    // The summary is this command's output, so it goes to stdout.
    #[allow(clippy::print_stdout)]
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let store = self
            .lake
            .open()
            .await
            .with_context(|| format!("cannot open the lake {}", self.lake.lake))?;
        if self.if_missing && vesper_datasource::sample_data_present(store.as_ref()).await? {
            println!(
                "sample data already in {}; nothing written",
                store.location()
            );
            return Ok(());
        }
        let written = vesper_datasource::write_sample_data(store.as_ref(), self.seed)
            .await
            .with_context(|| format!("cannot write the sample data to {}", store.location()))?;
        println!(
            "sample data (seed {}) written to {}:",
            self.seed,
            store.location()
        );
        for file in written {
            println!(
                "  {:<18} {:>7} rows {:>10} bytes",
                file.key, file.rows, file.bytes
            );
        }
        Ok(())
    }
}
