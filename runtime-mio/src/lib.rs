//! mio driver.
