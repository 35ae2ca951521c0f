//! `command`: a wasi:cli command, not an HTTP proxy. The host must refuse it
//! (wrong world) and keep serving what it served.

fn main() {
    println!("I am a command, not a proxy");
}
