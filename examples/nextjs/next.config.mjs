/** @type {import('next').NextConfig} */
const nextConfig = {
  // The client package ships TypeScript sources.
  transpilePackages: ["@licensing-gateway/client"],
  poweredByHeader: false,
};

export default nextConfig;
