//! Blue-green traffic on the device: [`bluegreen`] decides (pure, on a given clock) which
//! instance of an app takes new connections and when the old one may stop, [`forward`] owns
//! the service port and splices connections to the chosen instance, and [`ports`] gives each
//! instance its internal port and points its health probe there.

pub mod bluegreen;
pub mod forward;
pub mod ports;
