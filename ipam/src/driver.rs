//! loom-ipam's `IpamDriver`: Docker's `IpamDriver.*` calls mapped onto [`Ipam`].

use std::sync::Arc;

use async_trait::async_trait;
use netloom_plugin_api::engine::HeldAllocation;
use netloom_plugin_api::wire::ipam::{
    AddressSpacesResponse, CapabilitiesResponse, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
    RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
};
use netloom_plugin_api::{IpamDriver, PluginError, PluginResult};
use tracing::warn;

use crate::error::IpamError;
use crate::ipam::Ipam;

pub struct IpamPlugin {
    ipam: Arc<Ipam>,
}

impl IpamPlugin {
    pub fn new(ipam: Arc<Ipam>) -> Self {
        Self { ipam }
    }
}

fn plugin_error(e: IpamError) -> PluginError {
    PluginError::new(e.to_string())
}

#[async_trait]
impl IpamDriver for IpamPlugin {
    /// No request replay: state is persisted, and a replayed RequestPool after every dockerd
    /// restart would add a pool reference that nothing ever releases. No MAC requirement either,
    /// so Docker doesn't invent MAC addresses for the network drivers' endpoints.
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { requires_mac_address: false, requires_request_replay: false }
    }

    fn default_address_spaces(&self) -> AddressSpacesResponse {
        let config = self.ipam.config();
        AddressSpacesResponse {
            local_default_address_space: config.local_space.clone(),
            global_default_address_space: config.global_space.clone(),
        }
    }

    async fn request_pool(&self, req: RequestPoolRequest) -> PluginResult<RequestPoolResponse> {
        let grant = self
            .ipam
            .request_pool(&req.address_space, &req.pool, &req.sub_pool, &req.options, req.v6)
            .await
            .map_err(plugin_error)?;
        Ok(RequestPoolResponse { pool_id: grant.pool_id, pool: grant.subnet.to_string(), data: grant.data })
    }

    async fn release_pool(&self, req: ReleasePoolRequest) -> PluginResult<()> {
        self.ipam.release_pool(&req.pool_id).await.map_err(plugin_error)
    }

    async fn request_address(&self, req: RequestAddressRequest) -> PluginResult<RequestAddressResponse> {
        let grant = self.ipam.request_address(&req.pool_id, &req.address, &req.options).await.map_err(plugin_error)?;
        Ok(RequestAddressResponse { address: grant.to_string(), data: Default::default() })
    }

    async fn release_address(&self, req: ReleaseAddressRequest) -> PluginResult<()> {
        self.ipam.release_address(&req.pool_id, &req.address).await.map_err(plugin_error)
    }

    /// A store that cannot be read holds nothing as far as reconciliation can tell: nothing is
    /// released until it answers again.
    async fn held_allocations(&self) -> Option<Vec<HeldAllocation>> {
        match self.ipam.held_by_this_host().await {
            Ok(held) => Some(held),
            Err(e) => {
                warn!("listing this host's pools and addresses for reconciliation: {e}; nothing is released");
                Some(Vec::new())
            }
        }
    }

    async fn status_details(&self) -> serde_json::Value {
        crate::status::details(&self.ipam).await
    }
}
