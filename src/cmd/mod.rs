//! One module per subcommand.

pub(crate) mod demo;
pub(crate) mod load;
pub(crate) mod serve;
pub(crate) mod suite;
