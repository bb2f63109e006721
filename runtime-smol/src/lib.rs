//! smol driver.
