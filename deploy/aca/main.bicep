// The simulator on Azure Container Apps: the image from the registry made by registry.bicep,
// pulled with a managed identity; settings as environment variables, the keys as secrets; an
// Azure Files share mounted at /mnt/simulator for recordings and configuration files.
// deploy.sh deploys the registry, builds the image, then this file with the values from .env.

targetScope = 'resourceGroup'

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Lower-case prefix of resource names (3 to 11 letters or digits).')
@minLength(3)
@maxLength(11)
param baseName string = 'aoaisim'

@description('Name of the container registry that holds the image (output of registry.bicep).')
param containerRegistryName string

@description('Repository and tag of the image in that registry, for example aoai-simulator:20250101-120000.')
param imageName string

@secure()
@description('SIMULATOR_API_KEY: the key clients send.')
param simulatorApiKey string

@secure()
@description('AZURE_OPENAI_KEY: the Azure OpenAI key used in record mode; empty for none.')
param azureOpenAIKey string = ''

@description('SIMULATOR_MODE.')
@allowed([
  'generate'
  'record'
  'replay'
])
param simulatorMode string = 'generate'

@description('AZURE_OPENAI_ENDPOINT: the Azure OpenAI resource to record from.')
param azureOpenAIEndpoint string = ''

@description('RECORDING_DIR inside the container; by default on the file share, so recordings outlive revisions.')
param recordingDir string = '/mnt/simulator/recording'

@description('OPENAI_DEPLOYMENT_CONFIG_PATH inside the container, such as /mnt/simulator/deployments.json; empty for the built-in deployments.')
param deploymentConfigPath string = ''

@description('Further simulator settings as environment variables, name to value (LOG_LEVEL, SIMULATOR_LATENCY, ...).')
param extraEnv object = {}

@description('CPU cores of the container, 0.25 to 4 in steps of 0.25, as text.')
param cpu string = '1.0'

@description('Memory of the container: twice the cores, in Gi.')
param memory string = '2Gi'

// One replica by default: each replica keeps its own rate-limit windows unless extraEnv sets
// SIMULATOR_REDIS_URL, and more replicas would multiply the simulated quota.
@description('Fewest replicas.')
@minValue(0)
@maxValue(10)
param minReplicas int = 1

@description('Most replicas.')
@minValue(1)
@maxValue(10)
param maxReplicas int = 1

var storageAccountName = take('${baseName}${uniqueString(resourceGroup().id)}', 24)
var shareName = 'simulator'
var mountPath = '/mnt/simulator'
var healthPath = '/++/health'
var port = 8000
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d' // built-in role AcrPull

var apiKeySecret = [
  {
    name: 'simulator-api-key'
    value: simulatorApiKey
  }
]
// Container Apps refuses an empty secret, so the Azure OpenAI key is only added when given.
var openAIKeySecret = empty(azureOpenAIKey) ? [] : [
  {
    name: 'azure-openai-key'
    value: azureOpenAIKey
  }
]
var baseEnv = [
  {
    name: 'SIMULATOR_MODE'
    value: simulatorMode
  }
  {
    name: 'SIMULATOR_API_KEY'
    secretRef: 'simulator-api-key'
  }
  {
    name: 'AZURE_OPENAI_ENDPOINT'
    value: azureOpenAIEndpoint
  }
  {
    name: 'RECORDING_DIR'
    value: recordingDir
  }
  {
    name: 'OPENAI_DEPLOYMENT_CONFIG_PATH'
    value: deploymentConfigPath
  }
]
var openAIKeyEnv = empty(azureOpenAIKey) ? [] : [
  {
    name: 'AZURE_OPENAI_KEY'
    secretRef: 'azure-openai-key'
  }
]
var otherEnv = [for item in items(extraEnv): {
  name: item.key
  value: string(item.value)
}]

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: containerRegistryName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${baseName}-identity'
  location: location
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, identity.id, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${baseName}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource share 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-05-01' = {
  parent: fileService
  name: shareName
  properties: {
    shareQuota: 5 // GiB: recordings are YAML text
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${baseName}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

resource environmentStorage 'Microsoft.App/managedEnvironments/storages@2024-03-01' = {
  parent: environment
  name: 'simulator-share'
  properties: {
    azureFile: {
      accountName: storage.name
      accountKey: storage.listKeys().keys[0].value
      shareName: share.name
      accessMode: 'ReadWrite'
    }
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${baseName}-app'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  // The pull permission must exist before the first revision pulls the image.
  dependsOn: [
    acrPull
  ]
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: port
        transport: 'http'
        allowInsecure: false
      }
      registries: [
        {
          server: registry.properties.loginServer
          identity: identity.id
        }
      ]
      secrets: concat(apiKeySecret, openAIKeySecret)
    }
    template: {
      containers: [
        {
          name: 'simulator'
          image: '${registry.properties.loginServer}/${imageName}'
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: concat(baseEnv, openAIKeyEnv, otherEnv)
          volumeMounts: [
            {
              volumeName: 'simulator'
              mountPath: mountPath
            }
          ]
          probes: [
            {
              // Start-up loads mitmproxy and the token encodings: nearly a minute before liveness
              // counts (Container Apps allows at most 10 failures and 60 s of initial delay).
              type: 'Startup'
              httpGet: {
                path: healthPath
                port: port
              }
              initialDelaySeconds: 3
              periodSeconds: 5
              failureThreshold: 10
            }
            {
              type: 'Readiness'
              httpGet: {
                path: healthPath
                port: port
              }
              periodSeconds: 5
              timeoutSeconds: 2
              failureThreshold: 2
            }
            {
              type: 'Liveness'
              httpGet: {
                path: healthPath
                port: port
              }
              periodSeconds: 15
              timeoutSeconds: 3
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
      }
      volumes: [
        {
          name: 'simulator'
          storageType: 'AzureFile'
          storageName: environmentStorage.name
          // The image runs as uid 10001; SMB shares are root's unless told otherwise.
          mountOptions: 'uid=10001,gid=10001,dir_mode=0770,file_mode=0660'
        }
      ]
    }
  }
}

output url string = 'https://${app.properties.configuration.ingress.fqdn}'
output appName string = app.name
output storageAccountName string = storage.name
output shareName string = share.name
