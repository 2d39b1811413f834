use dlock::distributed_lock;

struct Report;

#[distributed_lock(key = "report", on_busy = "skip")]
async fn report() -> Result<Report, dlock::Error> {
    Ok(Report)
}

fn main() {}
