/** Proxy DHCP: public API for the daemon and the registry. */
export { ProxyDhcpServer, type ProxyDhcpServerOptions, type ProxyDhcpPorts, type ProxyDhcpStats } from './server.js';
export { type DhcpPolicy, type BootDecision } from './policy.js';
export { classify, type PxeClientInfo, type Firmware } from './pxe.js';
export { parseDhcp, serializeDhcp, type DhcpMessage, type DhcpOption } from './packet.js';
