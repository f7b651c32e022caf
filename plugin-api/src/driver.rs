//! The traits a driver binary implements; the server maps each protocol method onto one call.

use async_trait::async_trait;

use crate::engine::{HeldAllocation, HeldNetwork};
use crate::error::PluginResult;
use crate::wire::ipam::{
    AddressSpacesResponse, CapabilitiesResponse as IpamCapabilities, ReleaseAddressRequest, ReleasePoolRequest,
    RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
};
use crate::wire::network::{
    AllocateNetworkRequest, AllocateNetworkResponse, CapabilitiesResponse, CreateEndpointRequest,
    CreateEndpointResponse, CreateNetworkRequest, DiscoveryRequest, EndpointOperInfoResponse, EndpointRef, JoinRequest,
    JoinResponse, NetworkRef, ProgramExternalConnectivityRequest,
};

/// `NetworkDriver.*`. Create and Join calls must be idempotent: dockerd may retry them.
#[async_trait]
pub trait NetworkDriver: Send + Sync + 'static {
    fn capabilities(&self) -> CapabilitiesResponse;

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()>;
    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()>;
    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse>;
    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()>;
    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse>;
    async fn leave(&self, req: EndpointRef) -> PluginResult<()>;

    async fn endpoint_oper_info(&self, _req: EndpointRef) -> PluginResult<EndpointOperInfoResponse> {
        Ok(EndpointOperInfoResponse::default())
    }

    /// Swarm managers only; echoing the options back keeps what the user asked for.
    async fn allocate_network(&self, req: AllocateNetworkRequest) -> PluginResult<AllocateNetworkResponse> {
        Ok(AllocateNetworkResponse { options: req.options })
    }

    async fn free_network(&self, _req: NetworkRef) -> PluginResult<()> {
        Ok(())
    }

    async fn discover_new(&self, _req: DiscoveryRequest) -> PluginResult<()> {
        Ok(())
    }

    async fn discover_delete(&self, _req: DiscoveryRequest) -> PluginResult<()> {
        Ok(())
    }

    async fn program_external_connectivity(&self, _req: ProgramExternalConnectivityRequest) -> PluginResult<()> {
        Ok(())
    }

    /// The subnets of this driver's networks, for other netloom drivers on the host
    /// (`Netloom.Subnets`); none by default.
    fn claimed_subnets(&self) -> Vec<crate::siblings::ClaimedSubnets> {
        Vec::new()
    }

    /// The networks and endpoints this driver holds on this host, for reconciliation against
    /// Docker: whatever Docker no longer has is released through `leave`, `delete_endpoint` and
    /// `delete_network`. `None`: this driver is not reconciled.
    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        None
    }

    async fn revoke_external_connectivity(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
    /// Driver-specific facts for `loomctl status` (firewall backend, store and its health,
    /// overlay peers, ...); `Null` when there is nothing beyond what `held_networks` says.
    async fn status_details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Everything the driver holds for one of its networks (`loomctl inspect`): links, rules,
    /// peers, addresses. `network` is Docker's network id.
    async fn inspect_network(&self, network: &str) -> PluginResult<serde_json::Value> {
        Err(crate::error::PluginError::new(format!("this driver cannot inspect network {network}")))
    }

    /// A driver's own `Netloom.<call>` method (e.g. loom-overlay's `Netloom.RotateKey`).
    async fn control(&self, call: &str, _body: serde_json::Value) -> PluginResult<serde_json::Value> {
        Err(crate::error::PluginError::unknown_method(&format!("Netloom.{call}")))
    }
}

/// `IpamDriver.*`.
#[async_trait]
pub trait IpamDriver: Send + Sync + 'static {
    fn capabilities(&self) -> IpamCapabilities {
        IpamCapabilities::default()
    }

    fn default_address_spaces(&self) -> AddressSpacesResponse;

    async fn request_pool(&self, req: RequestPoolRequest) -> PluginResult<RequestPoolResponse>;
    async fn release_pool(&self, req: ReleasePoolRequest) -> PluginResult<()>;
    async fn request_address(&self, req: RequestAddressRequest) -> PluginResult<RequestAddressResponse>;
    async fn release_address(&self, req: ReleaseAddressRequest) -> PluginResult<()>;

    /// The pools and addresses this host holds, for reconciliation against Docker: whatever no
    /// Docker network using this IPAM driver has is released with `release_address` and then
    /// `release_pool`. `None`: not reconciled.
    async fn held_allocations(&self) -> Option<Vec<HeldAllocation>> {
        None
    }
    /// Driver-specific facts for `loomctl status` (store and its health, pools).
    async fn status_details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
