//! The host's upstream resolvers, from its resolv.conf.
