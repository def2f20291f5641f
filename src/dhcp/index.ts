/** Proxy DHCP: public API for the daemon and the registry. */
export { ProxyDhcpServer, type ProxyDhcpServerOptions, type ProxyDhcpPorts, type ProxyDhcpStats } from './server.js';
export { StaticDhcpPolicy, type DhcpPolicy, type BootDecision, type StaticDhcpPolicyOptions } from './policy.js';
export { classify, type PxeClientInfo, type Firmware } from './pxe.js';
export { parseDhcp, serializeDhcp, type DhcpMessage, type DhcpOption } from './packet.js';
