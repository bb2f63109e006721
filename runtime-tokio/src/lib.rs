//! tokio driver.
