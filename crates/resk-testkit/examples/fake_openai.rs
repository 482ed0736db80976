//! The OpenAI wire-format fake as a process, for `cargo xtask bench gateway`:
//! `fake_openai <port> <key>` serves `/v1/chat/completions`, `/v1/embeddings` and `/v1/models` on
//! 127.0.0.1 until killed, and prints `listening <port>` once it accepts connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: fake_openai <port> <key>");
    let key = args.next().expect("usage: fake_openai <port> <key>");
    let fake = resk_testkit::openai::FakeOpenAi::start_on(port, &key).await;
    println!("listening {}", fake.base_url());
    std::future::pending::<()>().await;
}
