/// jemalloc instead of glibc's malloc (see the README, "Realtime capacity against
/// PocketBase", for what it changes with ten thousand open connections).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gatehouse::cli::run()
}
